defmodule Payloads.MixProject do
  # A Membrane-style native: a unifex spec with payload arguments and
  # results, built by bundlex as a NIF and as a C node, against Shmex (this
  # repository) instead of Shmex 0.5.1. See README.md here for running it.
  use Mix.Project

  @shmex_root Path.expand("../..", __DIR__)

  def project do
    [
      app: :payloads,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:unifex, :bundlex] ++ Mix.compilers(),
      deps: deps()
    ]
  end

  def application, do: [extra_applications: [:logger]]

  defp deps do
    # bundlex, unifex and their dependencies from offline sources (hex.pm
    # is not reachable where this is tested): SHMEX_ECOSYSTEM, by default
    # ../shared/ecosystem beside the repository.
    ecosystem =
      System.get_env("SHMEX_ECOSYSTEM") || Path.expand("../shared/ecosystem", @shmex_root)

    offline =
      for app <- ~w(unifex bundlex bunch qex elixir_uuid zarex jason req)a do
        {app, path: Path.join([ecosystem, "deps", "#{app}"]), override: true}
      end

    [shmex() | offline]
  end

  # Shmex as a path dependency (this repository, or SHMEX_PATH: for example
  # an unpacked Hex package), or as a git one (SHMEX_GIT: a repository URL).
  defp shmex do
    case System.get_env("SHMEX_GIT") do
      nil ->
        {:shmex, path: System.get_env("SHMEX_PATH", @shmex_root), override: true}

      url ->
        {:shmex, git: url, branch: System.get_env("SHMEX_GIT_BRANCH", "main"), override: true}
    end
  end
end
