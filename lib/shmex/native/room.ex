defmodule Shmex.Native.Room do
  @moduledoc false
  # Making room in /dev/shm when it is full: the segments nobody references
  # any more may still be there, because their guards are small resources
  # that put almost no pressure on the heaps holding them, so no garbage
  # collection is due. A call that fails with ENOSPC comes here once, then
  # tries again (see `Shmex.Native`).
  #
  # It needs a process context, so it lives on this side of the NIF. It
  # collects every process's garbage, which frees the guards in it (each
  # unlinks its segment at once), then gives the background thread up to
  # @settle_ms to close the large segments it frees the pages of. What it
  # costs is one garbage collection of every process (a few microseconds for
  # an idle one, milliseconds for a large heap); it runs only after ENOSPC,
  # so a truly full /dev/shm is reported after one such round.

  alias Shmex.Native.Nif

  @settle_ms 100

  @doc "Collects the garbage that may hold guards, and waits for their pages to be freed."
  @spec make() :: :ok
  def make do
    for pid <- Process.list(), pid != self(), do: :erlang.garbage_collect(pid)
    :erlang.garbage_collect()
    settle(System.monotonic_time(:millisecond) + @settle_ms)
  end

  defp settle(deadline) do
    if Nif.stats().background_jobs > 0 and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(1)
      settle(deadline)
    else
      :ok
    end
  end
end
