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

  test "small calls stay on the normal scheduler" do
    shm = Shmex.new("small")
    assert {:ok, _} = Nif.write(shm, "tiny")
    assert {:ok, "tiny"} = Nif.read(%{shm | size: 4}, 4)
  end
end
