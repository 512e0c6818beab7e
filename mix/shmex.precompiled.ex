defmodule Mix.Tasks.Shmex.Precompiled do
  @shortdoc "Builds a precompiled Shmex artifact and writes the checksum file"
  @moduledoc """
  Builds, with cargo, the artifact users' `mix compile` installs instead of
  building from source, into `DIR`, and writes the checksum file
  (`checksum-shmex.exs`, the sha256 of every artifact of this version in
  `DIR`) at the project root:

      $ mix shmex.precompiled DIR [--target TRIPLE] [--glibc VERSION]
      $ mix shmex.precompiled DIR --checksums-only

  The artifact, `shmex-v<version>-nif-<NIF version>-<target>.tar.gz`, holds
  the NIF library (`priv/native/shmex_nif.so`) and the C API's headers and
  archives (`native/…`, which bundlex links into unifex natives).

    * `--target` - the Rust target (default: this VM's, as the compiler
      derives it);
    * `--glibc` - for a Linux gnu target, the oldest glibc the artifact must
      load on: builds with `cargo zigbuild` (cargo-zigbuild and zig on PATH,
      `cargo install cargo-zigbuild` and `pip install ziglang`) and checks
      the NIF needs no newer glibc symbol;
    * `--checksums-only` - builds nothing: writes the checksum file for the
      artifacts already in `DIR` (the release workflow gathers them there).
  """
  use Mix.Task

  alias Shmex.Mix.Precompiled

  @switches [target: :string, glibc: :string, checksums_only: :boolean]

  @impl Mix.Task
  def run(args) do
    {opts, dir} =
      case OptionParser.parse(args, strict: @switches) do
        {opts, [dir], []} ->
          {opts, Path.expand(dir)}

        _other ->
          Mix.raise("usage: mix shmex.precompiled DIR [--target TRIPLE] [--glibc VERSION]")
      end

    root = File.cwd!()
    version = Mix.Project.config()[:version]
    File.mkdir_p!(dir)

    unless opts[:checksums_only] do
      target = opts[:target] || Precompiled.target() || Mix.raise("unknown target: pass --target")
      name = Precompiled.artifact_name(version, Precompiled.nif_version(), target)
      build(root, dir, name, target, opts[:glibc])
    end

    write_checksums(root, dir, version)
  end

  defp build(root, dir, name, target, glibc) do
    stage = Path.join(dir, ".#{name}.stage")
    File.rm_rf!(stage)

    cargo =
      case glibc do
        nil ->
          [target: target]

        glibc ->
          unless String.ends_with?(target, "-linux-gnu"),
            do: Mix.raise("--glibc is for Linux gnu targets, not #{target}")

          [target: "#{target}.#{glibc}", zigbuild: true]
      end

    try do
      paths = [
        so: Path.join(stage, "priv/native/shmex_nif.so"),
        native: Path.join(stage, "native")
      ]

      Mix.Tasks.Compile.ShmexNative.from_source(root, paths, cargo)

      so = File.read!(paths[:so])
      newest = newest_glibc(so)

      if glibc && newest && Version.compare(version(newest), version(glibc)) == :gt do
        Mix.raise("the NIF built for glibc #{glibc} needs GLIBC_#{newest}")
      end

      entries =
        for file <- Precompiled.files() do
          {String.to_charlist(file), String.to_charlist(Path.join(stage, file))}
        end

      artifact = Path.join(dir, name)
      :ok = :erl_tar.create(String.to_charlist(artifact <> ".tmp"), entries, [:compressed])
      File.rename!(artifact <> ".tmp", artifact)

      floor = if newest, do: ", its NIF needs glibc #{newest} or later", else: ""
      Mix.shell().info("Wrote #{artifact} (#{File.stat!(artifact).size} bytes#{floor})")
    after
      File.rm_rf!(stage)
    end
  end

  # The newest GLIBC_x.y symbol version the library refers to.
  defp newest_glibc(so) do
    ~r/GLIBC_(\d+\.\d+(?:\.\d+)?)/
    |> Regex.scan(so, capture: :all_but_first)
    |> List.flatten()
    |> Enum.max_by(&version/1, Version, fn -> nil end)
  end

  defp version(text) do
    case String.split(text, ".") do
      [major, minor] -> Version.parse!("#{major}.#{minor}.0")
      _ -> Version.parse!(text)
    end
  end

  defp write_checksums(root, dir, version) do
    checksums =
      for path <- Path.wildcard(Path.join(dir, "shmex-v#{version}-nif-*.tar.gz")), into: %{} do
        {Path.basename(path), Precompiled.checksum(File.read!(path))}
      end

    if checksums == %{}, do: Mix.raise("no artifact of version #{version} in #{dir}")
    Precompiled.write_checksums!(root, checksums)

    Mix.shell().info("""
    Wrote #{Precompiled.checksum_path(root)}: #{map_size(checksums)} artifact(s). \
    While it is there, mix compile here installs what it lists instead of \
    building from source (unless SHMEX_BUILD=1).\
    """)
  end
end
