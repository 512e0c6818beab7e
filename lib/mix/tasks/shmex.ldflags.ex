defmodule Mix.Tasks.Shmex.Ldflags do
  @shortdoc "Prints the linker flags for code built against Shmex's C API"
  @moduledoc """
  Prints, and nothing else on standard output, the linker flags for C code
  using Shmex 0.5.1's C API: the directory of the archives `mix compile`
  installed and the libraries to link. Compiles quietly first, as
  `mix shmex.cflags` does; `--cnode` prints the C-node flavour (a C node
  also links `-lei`). `Shmex.Build.ldflags/1` is the same from Elixir.
  """
  use Mix.Task

  @impl Mix.Task
  def run(args), do: Mix.Tasks.Shmex.Cflags.print(args, &Shmex.Build.ldflags/1)
end
