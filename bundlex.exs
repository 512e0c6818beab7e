defmodule Shmex.BundlexProject do
  # Shmex 0.5.1's native libraries, for natives built by bundlex that depend
  # on them (unifex's NIF does: `deps: [shmex: :shmex]`). Bundlex loads this
  # file only in such a dependent's build; Shmex itself is built by cargo
  # (see mix.exs), and the libraries are the archives `mix compile`
  # installed (see Shmex.Build).
  use Bundlex.Project

  def project, do: [libs: Shmex.Build.bundlex_libs()]
end
