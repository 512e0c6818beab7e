defmodule Shmex.Test.PrivateShm do
  @moduledoc false
  # `use Shmex.Test.PrivateShm` in a test module whose VMs each mount a
  # /dev/shm of their own (see Shmex.Test.Beam): where that cannot be done,
  # the module is skipped, saying why.

  defmacro __using__(_opts) do
    quote do
      @moduletag :beam
      if reason = Shmex.Test.Beam.private_shm_unavailable() do
        IO.puts("skipping #{inspect(__MODULE__)}: #{reason}")
        @moduletag skip: reason
      end
    end
  end
end
