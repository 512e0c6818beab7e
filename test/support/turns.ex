defmodule Shmex.Test.Turns do
  @moduledoc false
  # Holding a segment's turn from a test: a long write holds it, and a read
  # of the test's own parks behind it, so that whatever the test starts next
  # on the segment queues behind both, however fast the machine.

  import ExUnit.Assertions
  alias Shmex.Native
  alias Shmex.Native.Nif

  @doc """
  Parks a read of the calling process behind a long write of `data` to
  `shm`: reads until one waits, while the write runs, and writes again if
  none did (up to `attempts` writes). `{:wait, token}`; the caller gets
  `{:written, result}` when the write is done, then
  `{:shmex_segment_free, token}`, and must call again within the turn's
  lease (a second) to take its turn.
  """
  def park_behind_a_write(shm, data, attempts) do
    me = self()
    spawn_link(fn -> send(me, {:written, Native.write(shm, data)}) end)

    case probe_while_writing(shm) do
      {:wait, _} = parked -> parked
      :written when attempts > 1 -> park_behind_a_write(shm, data, attempts - 1)
      :written -> flunk("no read met the write")
    end
  end

  defp probe_while_writing(shm) do
    receive do
      {:written, {:ok, _}} -> :written
    after
      0 ->
        case Nif.read(shm, 1) do
          {:wait, _} = parked -> parked
          {:ok, _} -> probe_while_writing(shm)
        end
    end
  end
end
