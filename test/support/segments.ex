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

  @doc """
  A name no test has used, unique across OS processes: it starts like the
  names this OS process generates (`/shmex-` and its pid in base 36), so
  that `held/0` counts it among this process's segments.
  """
  def unique_name do
    "/" <> own_prefix() <> "t#{System.unique_integer([:positive])}"
  end

  @doc "The segment names in /dev/shm that the OS process `os_pid` made."
  def names_of(os_pid) do
    prefix = prefix_of(os_pid)
    "/dev/shm" |> File.ls!() |> Enum.filter(&String.starts_with?(&1, prefix))
  end

  # What every segment name an OS process makes starts with in /dev/shm:
  # generated names carry the pid in their first five base-36 digits.
  defp own_prefix, do: prefix_of(System.pid())

  defp prefix_of(os_pid) do
    pid = os_pid |> String.to_integer() |> Integer.to_string(36) |> String.downcase()
    "shmex-" <> String.pad_leading(pid, 5, "0")
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
  What this OS process holds of shared memory: the segment names in
  /dev/shm that it made (other VMs may be using /dev/shm meanwhile),
  descriptors open on segments, and mappings of them. It waits until the
  library's background thread has closed what it was handed, and until two
  looks agree.
  """
  def held do
    first = measure_held()
    second = measure_held()
    if first == second, do: first, else: held()
  end

  defp measure_held do
    settle()

    %{
      names: count_names(),
      descriptors: count_descriptors(&String.starts_with?(&1, "/dev/shm/")),
      # The library keeps one descriptor on /dev/shm itself for good, from
      # its first call on: not a leak.
      all_descriptors: count_descriptors(&(&1 != "/dev/shm")),
      mappings:
        "/proc/self/maps"
        |> File.read!()
        |> String.split("\n")
        |> Enum.count(&(&1 =~ "/dev/shm/"))
    }
  end

  defp settle do
    case Shmex.Native.Nif.stats() do
      %{background_jobs: 0} ->
        :ok

      _busy ->
        Process.sleep(5)
        settle()
    end
  end

  defp count_names do
    prefix = own_prefix()
    "/dev/shm" |> File.ls!() |> Enum.count(&String.starts_with?(&1, prefix))
  end

  defp count_descriptors(filter) do
    "/proc/self/fd"
    |> File.ls!()
    |> Enum.map(&File.read_link(Path.join("/proc/self/fd", &1)))
    |> Enum.count(fn link -> match?({:ok, _}, link) and filter.(elem(link, 1)) end)
  end
end
