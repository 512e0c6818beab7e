defmodule Mix.Tasks.Compile.ShmexNative do
  @shortdoc "Builds the Shmex NIF and C libraries with cargo"
  @moduledoc """
  Builds the Rust workspace with `cargo build --release` and installs, under
  `priv/native/`:

    * `shmex_nif.so` - the NIF library behind `Shmex.Native`
    * `libshmex.a` and `include/shmex/{lib,shmex}.h` - Shmex 0.5.1's C API,
      for C NIFs (such as unifex's) to compile and link against

  Defined here rather than in `lib/` because a compiler has to exist before
  the project's own modules are compiled.
  """
  use Mix.Task.Compiler

  @impl Mix.Task.Compiler
  def run(_args) do
    root = File.cwd!()

    cargo!(root, [
      "build",
      "--release",
      "--quiet",
      "--package",
      "shmex_nif",
      "--package",
      "shmex_c"
    ])

    release = Path.join(target_dir(root), "release")
    priv = Path.join([root, "priv", "native"])
    headers = Path.join([root, "native", "shmex_c", "include", "shmex"])

    installed =
      [
        {Path.join(release, library_file("shmex_nif")), Path.join(priv, "shmex_nif.so")},
        {Path.join(release, "libshmex_c.a"), Path.join(priv, "libshmex.a")}
        | for header <- ["lib.h", "shmex.h"] do
            {Path.join(headers, header), Path.join([priv, "include", "shmex", header])}
          end
      ]
      |> Enum.map(fn {built, installed} -> install(built, installed) end)

    # priv/ may not have existed when Mix linked it into _build.
    Mix.Project.build_structure()
    {if(:ok in installed, do: :ok, else: :noop), []}
  end

  defp cargo!(root, args) do
    unless System.find_executable("cargo") do
      Mix.raise("""
      cargo was not found on PATH. Shmex is a Rust NIF and needs a Rust
      toolchain to build: https://rustup.rs (Debian/Ubuntu: see README.md).
      """)
    end

    case System.cmd("cargo", args, cd: root, into: IO.stream(:stdio, :line)) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("cargo #{Enum.join(args, " ")} failed with status #{status}")
    end
  end

  defp target_dir(root), do: System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")

  defp library_file(crate) do
    case :os.type() do
      {:unix, :darwin} -> "lib#{crate}.dylib"
      _ -> "lib#{crate}.so"
    end
  end

  # Copies only when the file changed, and through a rename: a VM may have
  # the old library loaded, and overwriting a loaded library in place crashes it.
  defp install(built, installed) do
    if File.read!(built) == (File.exists?(installed) && File.read!(installed)) do
      :noop
    else
      File.mkdir_p!(Path.dirname(installed))
      temporary = installed <> ".tmp"
      File.cp!(built, temporary)
      File.rename!(temporary, installed)
      :ok
    end
  end
end

defmodule Shmex.MixProject do
  use Mix.Project

  @version "0.5.2"

  def project do
    [
      app: :shmex,
      version: @version,
      elixir: "~> 1.14",
      compilers: [:shmex_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: [],
      description:
        "POSIX shared memory for Elixir: a drop-in replacement for Shmex 0.5.1, in Rust",
      package: [
        licenses: ["Apache-2.0"],
        # Every workspace member: cargo refuses a workspace with one missing.
        files: ~w(lib native Cargo.toml Cargo.lock mix.exs README.md)
      ]
    ]
  end

  def application, do: [extra_applications: []]

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_env), do: ["lib"]
end
