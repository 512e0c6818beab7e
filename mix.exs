# The compiler that builds the Rust workspace must exist before the project's
# own modules are compiled, so it lives outside lib/ (see mix/).
for file <- ~w(json cargo archive compile.shmex_native) do
  Code.require_file("mix/#{file}.ex", __DIR__)
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
        links: %{"Shmex 0.5.1, the API this replaces" => "https://hexdocs.pm/shmex/0.5.1"},
        # Every workspace member: cargo refuses a workspace with one missing.
        files: ~w(lib mix native Cargo.toml Cargo.lock mix.exs bundlex.exs README.md)
      ]
    ]
  end

  def application, do: [extra_applications: []]

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_env), do: ["lib"]
end
