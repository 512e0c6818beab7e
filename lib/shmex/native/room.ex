defmodule Shmex.Native.Room do
  @moduledoc false
  # Making room in /dev/shm when it is full: the segments nobody references
  # any more may still be there, because their guards are small resources
  # that put almost no pressure on the heaps holding them, so no garbage
  # collection is due. A call that fails with ENOSPC comes here once, then
  # tries again (see `Shmex.Native`).
  #
  # It needs a process context, so it lives on this side of the NIF. A round
  # collects every process's garbage, which frees the guards in it (each
  # unlinks its segment at once), then gives the background thread up to
  # @settle_ms to close the large segments it frees the pages of. A round
  # costs one garbage collection of every process (a few microseconds for an
  # idle one, milliseconds for a large heap), and only ever follows ENOSPC.
  #
  # Rounds are made one at a time by this server (started by
  # Shmex.Application): calls that failed before a round started are all
  # answered by it, so many processes meeting a full /dev/shm at once cost
  # one round, not one each. Without the server (the application not
  # started), the calling process makes the round itself.

  use GenServer

  alias Shmex.Native.Nif

  @settle_ms 100

  @doc false
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc "Collects the garbage that may hold guards, and waits for their pages to be freed."
  @spec make() :: :ok
  def make do
    failed_at = System.monotonic_time()

    case GenServer.whereis(__MODULE__) do
      nil -> round()
      server -> GenServer.call(server, {:make, failed_at}, :infinity)
    end
  end

  @impl true
  def init(nil), do: {:ok, System.monotonic_time()}

  @impl true
  def handle_call({:make, failed_at}, _from, last_started) do
    if failed_at < last_started do
      # A round started after this call failed: it made what room there is.
      {:reply, :ok, last_started}
    else
      started = System.monotonic_time()
      {:reply, round(), started}
    end
  end

  defp round do
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
