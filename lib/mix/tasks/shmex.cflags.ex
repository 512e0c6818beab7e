defmodule Mix.Tasks.Shmex.Cflags do
  @shortdoc "Prints the C compiler flags for code built against Shmex's C API"
  @moduledoc """
  Prints, and nothing else on standard output, the compiler flags for C
  code using Shmex 0.5.1's C API: the include directories of the headers
  `mix compile` installed and those of the VM (`erl_nif.h`, or `ei.h` for C
  nodes). Compiles stale dependencies first (or, in Shmex's own checkout,
  the project), with their progress on standard error, so the flags can be
  captured. Compile the dependencies once before: Mix compiles a
  dependency's tasks before it can run them, reporting on standard output.

      $ mix deps.compile
      $ CFLAGS=$(mix shmex.cflags)
      $ LDFLAGS=$(mix shmex.ldflags)
      $ gcc -shared -fPIC $CFLAGS my_nif.c $LDFLAGS -o priv/my_nif.so

  `--cnode` prints the C-node flavour. `Shmex.Build.cflags/1` is the same
  from Elixir.
  """
  use Mix.Task

  @impl Mix.Task
  def run(args), do: print(args, &Shmex.Build.cflags/1)

  @doc false
  # Parses `--cnode`, compiles quietly and prints flags(interface).
  @spec print([String.t()], (Shmex.Build.interface() -> String.t())) :: :ok
  def print(args, flags) do
    interface =
      case OptionParser.parse(args, strict: [cnode: :boolean]) do
        {opts, [], []} -> if opts[:cnode], do: :cnode, else: :nif
        _other -> Mix.raise("usage: mix #{Mix.Task.task_name(__MODULE__)} [--cnode]")
      end

    # Everything compiling prints (Mix's shell, compilers, cargo) goes to
    # standard error: processes spawned meanwhile inherit the group leader.
    leader = Process.group_leader()
    Process.group_leader(Process.whereis(:standard_error), self())

    try do
      # Not the dependent project itself: its code may load the NIF these
      # flags are for, which is not built yet.
      Mix.Task.run(
        if(Mix.Project.config()[:app] == :shmex, do: "compile", else: "deps.loadpaths")
      )
    after
      Process.group_leader(leader, self())
    end

    IO.puts(flags.(interface))
  end
end
