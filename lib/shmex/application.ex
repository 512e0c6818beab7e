defmodule Shmex.Application do
  @moduledoc false
  # Loads the NIF library when the application starts, rather than with the
  # first call of Shmex.Native (modules load lazily in interactive mode): it
  # is the VM's primary copy of the crate, which C NIFs linking libshmex.a
  # and Rust NIFs on the shmex crate find and work through from their first
  # call (native/shmex/src/vm.rs), and loading it removes what crashed VMs
  # left in /dev/shm. It also runs
  # Shmex.Native.Room, which makes room in a full /dev/shm one round at a
  # time.

  use Application

  @impl true
  def start(_type, _args) do
    Code.ensure_loaded!(Shmex.Native.Nif)
    Supervisor.start_link([Shmex.Native.Room], strategy: :one_for_one, name: Shmex.Supervisor)
  end
end
