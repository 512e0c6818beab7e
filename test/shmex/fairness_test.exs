defmodule Shmex.FairnessTest do
  # A NIF library shares the VM with everything else on the node: it must
  # not hold schedulers while waiting, take the descriptors others need, or
  # commit memory for a call that fails.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Native.Nif
  alias Shmex.Test.{Beam, Segments, Turns}

  @tag skip: Shmex.Test.Space.lacking(64 <<< 20, "a 64 MiB write")
  test "a call on a busy segment parks instead of waiting on a scheduler, and is told when to retry" do
    data = :binary.copy(<<1>>, 64 <<< 20)
    shm = Shmex.new(data)

    # A long write holds the segment; a read arriving meanwhile parks.
    assert {:wait, token} = Turns.park_behind_a_write(shm, data, 50)
    assert_receive {:written, {:ok, _}}, 10_000
    # The wake-up comes once the write is done, and the call then runs.
    assert_receive {:shmex_segment_free, ^token}, 5_000
    assert Native.read(shm, 1) == {:ok, <<1>>}
  end

  @tag skip: Shmex.Test.Space.lacking(3 * (64 <<< 20), "a 64 MiB write")
  test "a turn given to a process killed while it waited is passed on" do
    data = :binary.copy(<<1>>, 64 <<< 20)
    shm = Shmex.new(data)
    parent = self()

    # A long write holds the segment; a process queues behind it, then dies
    # before its turn comes. Its turn is given to it all the same.
    {doomed, doomed_ref} = spawn_monitor(fn -> queue_behind_a_write(shm, data, parent) end)

    assert_receive {:queued, {:wait, _token}}, 30_000
    Process.exit(doomed, :kill)
    assert_receive {:DOWN, ^doomed_ref, :process, _, :killed}

    # The next caller is not held by the dead one's turn for more than its
    # lease (a second) and a poll.
    {us, result} = :timer.tc(fn -> Native.read(shm, 1) end)
    assert result == {:ok, <<1>>}
    assert us < 5_000_000
  end

  # Queues a read behind a long write, tells `parent`, and waits to be killed.
  defp queue_behind_a_write(shm, data, parent) do
    send(parent, {:queued, Turns.park_behind_a_write(shm, data, 50)})
    Process.sleep(:infinity)
  end

  @tag skip: Shmex.Test.Space.lacking(3 * (128 <<< 20), "128 MiB calls")
  test "readers of one segment run together; a writer excludes them" do
    data = :binary.copy(<<2>>, 128 <<< 20)
    shm = Shmex.new(data)

    # Short reads of the segment, made while a long call on it runs: how many
    # had to wait for their turn, out of how many. On a busy machine the long
    # call may be over before the first probe: then it is made again. The
    # prober yields to let the long call start, and never sleeps: on a machine
    # whose cores are all busy, a scheduler that went to sleep here was seen
    # to wake only once the long call had ended.
    probe = fn long_call, met? ->
      Enum.find_value(1..20, fn _ ->
        parent = self()
        spawn_link(fn -> send(parent, {:done, long_call.()}) end)
        :erlang.yield()
        probes = probe_until_done(shm, [])
        assert_receive {:done, {:ok, _}}, 30_000
        counts = {Enum.count(probes, &match?({:wait, _}, &1)), length(probes)}
        if met?.(counts), do: counts
      end) || flunk("no probe met the long call in 20 attempts")
    end

    # Control: the probes do overlap a long call (here a write, which
    # excludes them): some wait.
    {waited, _} = probe.(fn -> Native.write(shm, data) end, fn {waited, _} -> waited > 0 end)
    assert waited > 0

    # A long read lets them in: none waits (under one lock for all, as
    # many would as for the write).
    {waited, probes} = probe.(fn -> Native.read(shm) end, fn {_, probes} -> probes > 0 end)
    assert waited == 0, "#{waited} of #{probes} probes waited for a reader"
  end

  defp probe_until_done(shm, probes) do
    receive do
      {:done, _} = done ->
        send(self(), done)
        probes
    after
      0 ->
        probe = Nif.read(shm, 1)

        case probe do
          {:wait, token} ->
            # Its turn comes: take it up.
            assert_receive {:shmex_segment_free, ^token}, 30_000
            assert Nif.read(shm, 1) == {:ok, <<2>>}

          {:ok, <<2>>} ->
            :ok
        end

        probe_until_done(shm, [probe | probes])
    end
  end

  test "a long call on a normal scheduler is charged to its process's time slice" do
    # Without the charge a NIF call costs a process next to nothing, and a
    # loop of 0.2 ms copies would keep its scheduler from everyone else.
    shm = Shmex.new(:binary.copy(<<3>>, 4 <<< 20))
    for _ <- 1..4, do: {:ok, _} = Native.read(shm, 1)
    data = :binary.copy(<<4>>, 4 <<< 20)

    charged = fn call ->
      {:reductions, before} = Process.info(self(), :reductions)
      {:ok, _} = call.()
      {:reductions, later} = Process.info(self(), :reductions)
      later - before
    end

    # A 4 MiB copy through a mapping takes a tenth of a slice (of ~4000
    # reductions) or more, as fast as memory goes: it is timed and charged,
    # at least 1% of a slice. A 64-byte one is not: a call costs next to
    # nothing then.
    assert charged.(fn -> Nif.write(shm, data) end) >= 40
    assert charged.(fn -> Nif.write(%{shm | size: 64}, binary_part(data, 0, 64)) end) < 40
  end

  @tag :beam
  test "with 64 descriptors, 20 segments are made and read and 24 files can still be opened" do
    code = ~S"""
    segments = for i <- 1..20, do: Shmex.new(:binary.copy(<<i>>, 10_000))
    for _ <- 1..3, shm <- segments, do: {:ok, _} = Shmex.Native.read(shm)
    files = for _ <- 1..24, do: File.open!("/dev/null")
    IO.puts("kept open: #{Shmex.Native.Nif.stats().kept_open}, files: #{length(files)}")
    Enum.each(segments, &Shmex.ensure_not_gc/1)
    """

    {output, status} = Beam.run(code, ulimit: "-n 64")
    assert status == 0, output
    assert output =~ "files: 24"
  end

  @tag :beam
  test "a read the address space cannot hold is {:enomem, :mmap}, and commits nothing" do
    # A 2 GiB sparse segment, read whole by a VM allowed 2.5 GB of address space.
    code = ~S"""
    shm = Shmex.empty(2 <<< 30)
    IO.inspect(Shmex.Native.read(%{shm | size: shm.capacity}), label: "read")
    {blocks, 0} = System.cmd("stat", ["-c", "%b", "/dev/shm" <> shm.name])
    IO.puts("blocks: #{String.trim(blocks)}")
    Shmex.ensure_not_gc(shm)
    IO.puts("alive")
    """

    {output, status} = Beam.run("import Bitwise\n" <> code, ulimit: "-v 2500000")
    assert status == 0, output
    assert output =~ "read: {:error, {:enomem, :mmap}}"
    assert output =~ "blocks: 0"
    assert output =~ "alive"
  end

  test "a read larger than all memory commits nothing either" do
    shm = Shmex.empty(1 <<< 46)
    assert Native.read(%{shm | size: shm.capacity}) == {:error, {:enomem, :mmap}}
    {blocks, 0} = System.cmd("stat", ["-c", "%b", Segments.path(shm)])
    assert String.trim(blocks) == "0"
    Shmex.ensure_not_gc(shm)
  end

  test "an over-long name is refused at once, by every call" do
    shm = Shmex.new("x")
    # 64 MiB: refused as too long without being read or copied.
    huge = %{shm | name: :binary.copy("a", 64 <<< 20), guard: nil}
    too_long = {:error, {:enametoolong, :shm_open}}

    assert Nif.read(huge, 1) == too_long
    assert Native.write(huge, "y") == too_long
    assert Native.append(shm, huge) == too_long
    assert Native.add_guard(huge) == too_long
    assert Native.allocate(%Shmex{name: huge.name}) == too_long
  end
end
