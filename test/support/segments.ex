defmodule Shmex.Test.Segments do
  @moduledoc false
  # Looking at segments from the outside: through /dev/shm, as another OS
  # process would.

  @doc "The path of a segment in the shm filesystem."
  def path(%Shmex{name: name}), do: path(name)
  def path("/" <> name), do: Path.join("/dev/shm", name)

  @doc "Whether the segment exists."
  def exists?(shm_or_name), do: File.exists?(path(shm_or_name))

  @doc "The segment's real size in bytes."
  def real_size(shm_or_name), do: File.stat!(path(shm_or_name)).size

  @doc "A name no test has used, at most 31 bytes."
  def unique_name do
    "/shmex-t#{System.unique_integer([:positive])}-#{System.pid()}"
  end

  @doc "Runs `fun` in a process that then exits, so nothing it made stays referenced."
  def in_process(fun) do
    task = Task.async(fun)
    result = Task.await(task, :infinity)
    :erlang.garbage_collect()
    result
  end

  @doc "Waits until `condition` holds, collecting garbage meanwhile; false if it never does."
  def eventually(condition, attempts \\ 100) do
    cond do
      condition.() ->
        true

      attempts == 0 ->
        false

      true ->
        for pid <- Process.list(), do: :erlang.garbage_collect(pid)
        Process.sleep(10)
        eventually(condition, attempts - 1)
    end
  end

  @doc """
  What this OS process holds of shared memory: segment names in /dev/shm,
  descriptors open on them, and mappings of them. Empty segments the library
  made ahead of time are not counted; it waits until the library has removed
  the segments already collected, and until two looks agree.
  """
  def held do
    first = measure_held()
    second = measure_held()
    if first == second, do: first, else: held()
  end

  defp measure_held do
    stats = settled_stats()

    %{
      names: count_names() - stats.ready,
      descriptors: count_descriptors(&String.starts_with?(&1, "/dev/shm/")) - stats.ready,
      all_descriptors: count_descriptors(fn _ -> true end) - stats.ready,
      mappings:
        "/proc/self/maps"
        |> File.read!()
        |> String.split("\n")
        |> Enum.count(&(&1 =~ "/dev/shm/"))
    }
  end

  defp settled_stats do
    case Shmex.Native.Nif.stats() do
      %{pending_removal: 0} = stats ->
        stats

      _busy ->
        Process.sleep(5)
        settled_stats()
    end
  end

  defp count_names, do: "/dev/shm" |> File.ls!() |> Enum.count(&String.starts_with?(&1, "shmex-"))

  defp count_descriptors(filter) do
    "/proc/self/fd"
    |> File.ls!()
    |> Enum.map(&File.read_link(Path.join("/proc/self/fd", &1)))
    |> Enum.count(fn link -> match?({:ok, _}, link) and filter.(elem(link, 1)) end)
  end
end
