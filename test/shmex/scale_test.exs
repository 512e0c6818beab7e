defmodule Shmex.ScaleTest do
  # More live segments than the default vm.max_map_count (65530) and than
  # this machine's descriptor limit: segments are not each kept open and
  # mapped, only as many as a budget allows; the rest are opened per call.
  use ExUnit.Case, async: false

  alias Shmex.Native
  alias Shmex.Test.Segments

  @segments 70_000

  @tag timeout: 300_000
  @tag skip: Shmex.Test.Space.lacking(@segments * 4096, "70,000 segments of a page")
  test "70,000 live, guarded, written segments all read back" do
    before = Segments.held()

    Segments.in_process(fn ->
      segments = for i <- 1..@segments, do: Shmex.new(<<i::32, "payload">>)

      for {shm, i} <- Enum.with_index(segments, 1) do
        assert Native.read(shm) == {:ok, <<i::32, "payload">>}
      end

      held = Segments.held()
      assert held.names - before.names == @segments
      # At most the 4096 kept open, and a few more the suite's other
      # libraries (the example NIFs) keep.
      assert held.descriptors <= 4096 + 64 and held.mappings <= 4096, inspect(held)
      # Reading them all again, from another process, still works.
      assert segments
             |> Task.async_stream(&Native.read/1)
             |> Enum.all?(&match?({:ok, {:ok, _}}, &1))

      # The name is the truth for every segment, kept open or not: once
      # another process removes it, the guard's calls fail alike.
      first = hd(segments)
      last = List.last(segments)
      File.rm!(Segments.path(first))
      File.rm!(Segments.path(last))
      assert Native.read(first) == {:error, {:enoent, :shm_open}}
      assert Native.read(last) == {:error, {:enoent, :shm_open}}
    end)

    assert Segments.eventually(fn -> Segments.held() == before end, 500),
           "held before: #{inspect(before)}, after: #{inspect(Segments.held())}"
  end
end
