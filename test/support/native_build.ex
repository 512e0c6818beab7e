defmodule Shmex.Test.NativeBuild do
  @moduledoc false
  # Builds the native clients the tests drive (a Rust NIF on the shmex crate,
  # a C NIF on the C ABI) and loads them. Each is loaded from a copy in a
  # fresh directory: a library must not be replaced while a VM has it loaded.

  @root Path.expand("../..", __DIR__)

  @doc "Builds a workspace crate with cargo; the path of its library."
  def cargo_build!(package) do
    run!("cargo", ["build", "--release", "--quiet", "--package", package])
    target = System.get_env("CARGO_TARGET_DIR") || Path.join(@root, "target")
    Path.join([target, "release", "lib#{package}.so"])
  end

  @doc """
  Compiles the C NIF `source` against the C API that `mix compile` installed
  in priv/native, linked with its static library; the library's path.
  """
  def gcc_nif!(source) do
    priv = Path.join(@root, "priv/native")
    erts = Path.join(:code.root_dir(), "erts-#{:erlang.system_info(:version)}/include")
    output = Path.join(System.tmp_dir!(), "shmex-c-#{System.unique_integer([:positive])}.so")

    run!(
      "gcc",
      [
        ~w(-std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared),
        ["-I", erts, "-I", Path.join(priv, "include"), Path.join(@root, source)],
        [Path.join(priv, "libshmex.a"), "-lpthread", "-ldl", "-lm", "-o", output]
      ]
      |> List.flatten()
    )

    output
  end

  @doc "Copies `library` to a fresh directory as `name.so`; the path without `.so`."
  def stage!(library, name) do
    dir = Path.join(System.tmp_dir!(), "shmex-test-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    File.cp!(library, Path.join(dir, "#{name}.so"))
    Path.join(dir, name)
  end

  @doc "Runs a command in the project's root; raises with its output if it fails."
  def run!(command, args) do
    case System.cmd(command, args, cd: @root, stderr_to_stdout: true) do
      {_output, 0} ->
        :ok

      {output, status} ->
        raise "#{command} #{Enum.join(args, " ")} failed (#{status}):\n#{output}"
    end
  end
end
