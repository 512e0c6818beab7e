defmodule Shmex.SchedulingTest do
  # Where calls run, seen from the dirty schedulers' own accounting
  # (microstate accounting counts for the whole VM: nothing else may run
  # meanwhile, hence not async).
  use ExUnit.Case, async: false

  import Bitwise
  alias Shmex.Native
  alias Shmex.Native.Nif

  # Microseconds the dirty CPU schedulers were busy while `fun` ran.
  defp dirty_busy(fun) do
    :msacc.start()
    before = dirty_counters()
    result = fun.()
    busy = dirty_counters() - before
    :msacc.stop()
    {result, busy}
  end

  defp dirty_counters do
    for %{type: :dirty_cpu_scheduler, counters: counters} <- :msacc.stats(),
        {state, us} <- counters,
        state != :sleep,
        reduce: 0,
        do: (sum -> sum + us)
  end

  @tag skip: Shmex.Test.Space.lacking(2 * (8 <<< 20), "an 8 MiB write")
  test "work too long for a normal scheduler moves itself to a dirty one" do
    shm = Shmex.new("small")
    big = :binary.copy(<<1>>, 8 <<< 20)

    # A few bytes stay where they are called.
    {result, busy} = dirty_busy(fn -> Nif.write(shm, "tiny") end)
    assert {:ok, _} = result
    assert busy < 1_000, "dirty schedulers busy #{busy} us"

    # 8 MiB of fresh pages: several milliseconds, on a dirty scheduler.
    {result, busy} = dirty_busy(fn -> Nif.write(shm, big) end)
    assert {:ok, written} = result
    assert busy >= 1_000, "dirty schedulers busy #{busy} us"
    assert Shmex.to_binary(written) == big
  end

  @tag skip: Shmex.Test.Space.lacking(5 * (24 <<< 20), "24 MiB calls")
  test "every copying call moves itself to a dirty scheduler when long" do
    data = :binary.copy(<<2>>, 24 <<< 20)
    shm = Shmex.new(data)

    for call <- [
          fn -> Nif.read(shm, shm.size) end,
          fn -> Nif.split_at(shm, 0) end,
          fn -> Nif.append(shm, shm) end
        ] do
      {result, busy} = dirty_busy(call)
      assert {:ok, _} = result
      assert busy >= 1_000, "dirty schedulers busy #{busy} us"
    end

    assert {:ok, ^data} = Native.read(%{shm | size: byte_size(data)})
    assert {:ok, {left, right}} = Native.split_at(shm, 1)
    assert {left.size, right.size} == {1, byte_size(data) - 1}
  end

  # How many times `fun`, run in a process of its own, was scheduled in to
  # continue a copy in steps (`shmex_step`, a NIF rescheduling itself), and
  # what it returned.
  defp steps(fun) do
    parent = self()
    pid = spawn(fn -> receive(do: (:go -> send(parent, {:done, self(), fun.()}))) end)
    :erlang.trace(pid, true, [:running])
    send(pid, :go)
    result = receive(do: ({:done, ^pid, result} -> result))
    Process.sleep(20)
    {result, count_steps(pid, 0)}
  end

  defp count_steps(pid, count) do
    receive do
      {:trace, ^pid, :in, {Nif, :shmex_step, _arity}} -> count_steps(pid, count + 1)
      {:trace, ^pid, _event, _mfa} -> count_steps(pid, count)
    after
      0 -> count
    end
  end

  @tag skip: Shmex.Test.Space.lacking(6 * (64 <<< 20), "64 MiB splits, appends and trims")
  test "long splits, appends and trims go on in steps, and leave what they would whole" do
    data = :binary.copy(<<1, 2, 3, 4, 5, 6, 7>>, div(64 <<< 20, 7))
    size = byte_size(data)
    half = div(size, 2)
    source = Shmex.new(data)

    {result, steps} = steps(fn -> Nif.split_at(source, 3) end)
    assert {:ok, {left, right}} = result
    assert steps > 1, "split in #{steps} steps"
    assert Shmex.to_binary(left) == binary_part(data, 0, 3)
    assert Shmex.to_binary(right) == binary_part(data, 3, size - 3)

    {result, steps} = steps(fn -> Nif.append(Shmex.new("ab"), source) end)
    assert {:ok, appended} = result
    assert steps > 1, "append in #{steps} steps"
    assert Shmex.to_binary(appended) == "ab" <> data

    # Onto itself, moving bytes up over bytes still to be moved.
    shm = Shmex.new(data)
    {result, steps} = steps(fn -> Nif.append(%{shm | size: half}, shm) end)
    assert {:ok, doubled} = result
    assert steps > 1, "append within in #{steps} steps"
    assert Shmex.to_binary(doubled) == binary_part(data, 0, half) <> data

    {result, steps} = steps(fn -> Nif.trim(Shmex.new(data), 5) end)
    assert {:ok, trimmed} = result
    assert steps > 1, "trim in #{steps} steps"
    assert Shmex.to_binary(trimmed) == binary_part(data, 5, size - 5)
    assert {trimmed.size, trimmed.capacity} == {size - 5, size - 5}

    # A small one runs whole.
    {result, steps} = steps(fn -> Nif.trim(Shmex.new("abcdef"), 2) end)
    assert {:ok, small} = result
    assert steps == 0
    assert Shmex.to_binary(small) == "cdef"
  end

  @tag skip: Shmex.Test.Space.lacking(3 * (64 <<< 20), "a 64 MiB append")
  test "an append whose caller dies between steps leaves the target as it was" do
    source = Shmex.new(:binary.copy(<<9>>, 64 <<< 20))
    target = Shmex.new("abc")
    parent = self()

    pid =
      spawn(fn ->
        send(parent, :started)
        Nif.append(%{target | guard: nil}, source)
      end)

    :erlang.trace(pid, true, [:running])
    receive(do: (:started -> :ok))
    # Killed once it goes on in steps.
    receive do
      {:trace, ^pid, :in, {Nif, :shmex_step, _arity}} -> :ok
    after
      10_000 -> flunk("the append never went on in steps")
    end

    Process.exit(pid, :kill)
    ref = Process.monitor(pid)
    receive(do: ({:DOWN, ^ref, :process, ^pid, _reason} -> :ok))
    :erlang.garbage_collect()
    Process.sleep(50)
    assert {:ok, "abc"} = Native.read(target)
    assert {:ok, %{size: 3}} = File.stat("/dev/shm/" <> target.name)
  end

  test "small calls stay on the normal scheduler" do
    shm = Shmex.new("small")
    assert {:ok, _} = Nif.write(shm, "tiny")
    assert {:ok, "tiny"} = Nif.read(%{shm | size: 4}, 4)
  end
end
