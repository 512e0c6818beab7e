defmodule Shmex.Test.NativeBuild do
  @moduledoc false
  # Builds the native clients the tests drive (a Rust NIF on the shmex crate,
  # C code on the installed C API) and stages them for loading. Every path is
  # unique to this OS process and removed when the VM exits: two suites may
  # run at once, and a library must not be replaced while a VM has it loaded.

  @root Path.expand("../..", __DIR__)

  @doc "Builds a workspace crate with cargo; the path of its library."
  def cargo_library!(package) do
    [package]
    |> Shmex.Mix.Cargo.build!(root: @root, label: package)
    |> Shmex.Mix.Cargo.library!(package, ".so")
  end

  @doc """
  Compiles the C NIF `source` against the C API that `mix compile`
  installed, linked with its archive; the library's path. Options: `name:`
  of the library (the source's by default), `defines:` for the compiler.
  """
  def gcc_nif!(source, opts \\ []) do
    name = Keyword.get(opts, :name, Path.basename(source, ".c"))
    output = Path.join(scratch_dir(), name <> ".so")
    defines = for {key, value} <- Keyword.get(opts, :defines, []), do: "-D#{key}=#{value}"
    flags = ~w(-std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared) ++ defines

    run!(
      "gcc",
      flags ++
        split(Shmex.Build.cflags(:nif)) ++
        [source, "-o", output] ++
        split(Shmex.Build.ldflags(:nif))
    )

    output
  end

  @doc """
  Compiles and links the C node `source` against the C-node API that
  `mix compile` installed, with ei; the executable's path.
  """
  def gcc_cnode!(source) do
    output = Path.join(scratch_dir(), Path.basename(source, ".c"))
    ei = Path.join(:code.lib_dir(:erl_interface), "lib")
    flags = ~w(-std=c11 -Wall -Wextra -Werror -O2)
    link = split(Shmex.Build.ldflags(:cnode)) ++ ["-L#{ei}", "-lei", "-lpthread"]
    run!("gcc", flags ++ split(Shmex.Build.cflags(:cnode)) ++ [source, "-o", output] ++ link)
    output
  end

  @doc "Copies `library` into this run's scratch directory as `name.so`; the path without `.so`."
  def stage!(library, name) do
    target = Path.join(scratch_dir(), "#{name}.so")
    unless library == target, do: File.cp!(library, target)
    Path.join(scratch_dir(), name)
  end

  @doc """
  A directory unique to this OS process (made with mkdtemp semantics:
  created exclusively), removed when the VM exits.
  """
  def scratch_dir do
    case :persistent_term.get({__MODULE__, :scratch}, nil) do
      nil ->
        dir = make_unique_dir()
        :persistent_term.put({__MODULE__, :scratch}, dir)
        System.at_exit(fn _status -> File.rm_rf(dir) end)
        dir

      dir ->
        dir
    end
  end

  defp make_unique_dir do
    base = Path.join(System.tmp_dir!(), "shmex-test-#{System.pid()}-")
    suffix = :rand.bytes(6) |> Base.url_encode64(padding: false)
    dir = base <> suffix

    case File.mkdir(dir) do
      :ok -> dir
      {:error, :eexist} -> make_unique_dir()
      {:error, reason} -> raise "cannot create #{dir}: #{:file.format_error(reason)}"
    end
  end

  defp split(flags), do: String.split(flags, " ", trim: true)

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
