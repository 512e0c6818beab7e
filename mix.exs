# The compiler that builds the Rust workspace (or installs a precompiled
# artifact) must exist before the project's own modules are compiled, so it
# lives outside lib/ (see mix/), with the maintainers' task that makes the
# artifacts.
for file <- ~w(json cargo archive precompiled compile.shmex_native shmex.precompiled) do
  Code.require_file("mix/#{file}.ex", __DIR__)
end

defmodule Shmex.MixProject do
  use Mix.Project

  @version "0.5.2"
  @source_url "https://github.com/shmex-rs/shmex_rs"

  def project do
    [
      app: :shmex,
      version: @version,
      elixir: "~> 1.14",
      compilers: [:shmex_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      # Where `mix compile` downloads precompiled artifacts from, unless
      # SHMEX_PRECOMPILED_URL says otherwise (see mix/precompiled.ex).
      shmex_precompiled_url: "#{@source_url}/releases/download/v#{@version}",
      description:
        "POSIX shared memory for Elixir: a drop-in replacement for Shmex 0.5.1, in Rust",
      package: package(),
      name: "Shmex",
      source_url: @source_url,
      docs: docs()
    ] ++ cli_env()
  end

  def application, do: [mod: {Shmex.Application, []}, extra_applications: []]

  # `mix docs` runs in an environment of its own, so that no other task
  # needs ex_doc or Hex.
  def cli, do: [preferred_envs: [docs: :docs]]

  defp cli_env,
    do:
      if(Version.match?(System.version(), "< 1.15.0"),
        do: [preferred_cli_env: [docs: :docs]],
        else: []
      )

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_env), do: ["lib"]

  # hex.pm's `shmex` is Membrane's (0.5.1): this one is published as
  # `shmex_rs` and keeps the application name, so that
  # `{:shmex, "~> 0.5", hex: :shmex_rs, override: true}` replaces it for
  # every library depending on `:shmex`.
  defp package do
    [
      name: "shmex_rs",
      licenses: ["Apache-2.0"],
      links: %{
        "Source" => @source_url,
        "Changelog" => "#{@source_url}/blob/v#{@version}/CHANGELOG.md",
        "Shmex 0.5.1, the API this replaces" => "https://hexdocs.pm/shmex/0.5.1"
      },
      # Every workspace member: cargo refuses a workspace with one missing
      # (Rust is needed only with SHMEX_BUILD=1, or for a target the
      # checksum file lists no artifact for). The checksum file exists once
      # `mix shmex.precompiled` wrote it (the release workflow does).
      files:
        ~w(lib mix native Cargo.toml Cargo.lock mix.exs bundlex.exs README.md CHANGELOG.md) ++
          ~w(LICENSE guides .formatter.exs) ++
          Enum.map(Path.wildcard(Path.join(__DIR__, "checksum-*.exs")), &Path.basename/1)
    ]
  end

  defp docs do
    [
      main: "readme",
      source_ref: "v#{@version}",
      extras: [
        "README.md",
        "guides/membrane.md",
        "guides/c_and_python.md",
        "guides/docker.md",
        "guides/safety.md",
        "guides/native_apis.md",
        "CHANGELOG.md"
      ],
      groups_for_extras: [Guides: ~r{guides/}],
      groups_for_modules: [Build: [Shmex.Build, Mix.Tasks.Shmex.Cflags]]
    ]
  end

  defp deps do
    if Mix.env() == :docs, do: docs_deps(shared_ecosystem()), else: []
  end

  # ex_doc and its dependencies: from the offline sources of the shared
  # material when it is found (as .ci/shared finds it: SHMEX_SHARED, else
  # ../shared beside this checkout, else beside the repository it was
  # cloned from), else from Hex.
  defp docs_deps(nil), do: [{:ex_doc, "~> 0.36", only: :docs, runtime: false}]

  defp docs_deps(ecosystem) do
    for app <- ~w(ex_doc earmark_parser makeup makeup_elixir makeup_erlang nimble_parsec)a do
      {app,
       path: Path.join([ecosystem, "deps", "#{app}"]), only: :docs, runtime: false, override: true}
    end
  end

  defp shared_ecosystem do
    origin =
      case System.cmd("git", ["-C", __DIR__, "remote", "get-url", "origin"],
             stderr_to_stdout: true
           ) do
        {url, 0} -> Path.join(String.replace_prefix(String.trim(url), "file://", ""), "../shared")
        _other -> nil
      end

    [System.get_env("SHMEX_SHARED"), Path.expand("../shared", __DIR__), origin]
    |> Enum.reject(&(&1 in [nil, ""]))
    |> Enum.map(&Path.join(&1, "ecosystem"))
    |> Enum.find(&File.dir?(Path.join(&1, "deps/ex_doc")))
  end
end
