defmodule Shmex.Mix.Cargo do
  @moduledoc false
  # Runs `cargo build --release` and reads what it built from its JSON
  # messages, as rustler's Mix compiler does: the artifacts' paths come from
  # cargo, wherever its target directory is. Used by the project's compiler
  # and by the test setup.
  #
  # Progress: cargo's own lines ("Compiling shmex v0.5.2 ...") are shown
  # under a heading as they come, unless all cargo had to say is that it
  # finished: a build with nothing to do stays silent.

  alias Shmex.Mix.JSON

  # rustler 0.39 and the lock file format need it; Debian's own cargo is older.
  @min_rust "1.91.0"

  @doc """
  Builds `packages` of the workspace at `root`; returns each built library's
  paths by crate name. `label` heads cargo's output when there is some.

  `target: triple` builds for that Rust target (cargo's `--target`);
  `zigbuild: true` builds with `cargo zigbuild`, which links with zig and so
  accepts a glibc version after a Linux triple (`x86_64-unknown-linux-gnu.2.28`).
  """
  @spec build!([String.t()], keyword()) :: %{String.t() => [Path.t()]}
  def build!(packages, opts) do
    cargo = check_rust!(Keyword.fetch!(opts, :label))
    root = Keyword.fetch!(opts, :root)
    command = if Keyword.get(opts, :zigbuild, false), do: "zigbuild", else: "build"

    args =
      [command, "--release", "--message-format=json-render-diagnostics"] ++
        Enum.flat_map(packages, &["--package", &1]) ++
        if(target = opts[:target], do: ["--target", target], else: [])

    port =
      Port.open({:spawn_executable, cargo}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        line: 65_536,
        args: args,
        cd: root
      ])

    state = %{port: port, label: Keyword.fetch!(opts, :label), showing: false, partial: ""}
    collect(state, %{})
  end

  defp collect(%{port: port} = state, artifacts) do
    receive do
      {^port, {:data, {:noeol, part}}} ->
        collect(%{state | partial: state.partial <> part}, artifacts)

      {^port, {:data, {:eol, part}}} ->
        line = state.partial <> part
        {state, artifacts} = handle(line, %{state | partial: ""}, artifacts)
        collect(state, artifacts)

      {^port, {:exit_status, 0}} ->
        artifacts

      {^port, {:exit_status, status}} ->
        Mix.raise("cargo build failed with status #{status} (its output is above)")
    end
  end

  defp handle("{" <> _ = message, state, artifacts) do
    case JSON.decode!(message) do
      %{"reason" => "compiler-artifact", "target" => %{"name" => name}, "filenames" => files} ->
        {state, Map.put(artifacts, name, files)}

      _other ->
        {state, artifacts}
    end
  end

  defp handle(line, %{showing: false} = state, artifacts) do
    if line =~ ~r/^\s*Finished\b/ do
      {state, artifacts}
    else
      Mix.shell().info("Compiling #{state.label} (cargo build --release)")
      handle(line, %{state | showing: true}, artifacts)
    end
  end

  defp handle(line, state, artifacts) do
    IO.puts(:stderr, line)
    {state, artifacts}
  end

  @doc "The one library file of `crate` with this extension among `artifacts`."
  @spec library!(%{String.t() => [Path.t()]}, String.t(), String.t()) :: Path.t()
  def library!(artifacts, crate, extension) do
    artifacts
    |> Map.get(crate, [])
    |> Enum.find(&(Path.extname(&1) == extension)) ||
      Mix.raise("cargo built no #{extension} file for #{crate}: #{inspect(artifacts[crate])}")
  end

  # The cargo to use; raises, saying what to do, when there is none or it is
  # too old.
  defp check_rust!(label) do
    cargo =
      System.find_executable("cargo") ||
        Mix.raise("""
        cargo was not found on PATH, and building #{label} from source
        needs Rust #{@min_rust} or later, from https://rustup.rs (see README.md,
        "Building from source").
        """)

    {version, 0} = System.cmd(cargo, ["--version"])

    case Regex.run(~r/^cargo (\d+\.\d+\.\d+)/, version, capture: :all_but_first) do
      [found] ->
        if Version.compare(found, @min_rust) == :lt do
          Mix.raise("""
          Shmex needs Rust #{@min_rust} or later; #{cargo} is #{found}.
          Debian's and Ubuntu's own cargo packages are too old: install Rust
          with rustup (https://rustup.rs, see README.md, "Building from source") and
          put ~/.cargo/bin first on PATH.
          """)
        end

      nil ->
        :ok
    end

    cargo
  end
end
