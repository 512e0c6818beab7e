defmodule Shmex.LeakTest do
  # Counts what the whole OS process holds, so it must not run beside other
  # tests: async: false modules run after the async ones, one at a time.
  use ExUnit.Case, async: false

  alias Shmex.Native
  alias Shmex.Test.Segments

  @calls 20_000

  test "20,000 mixed calls, failing ones included, leave nothing behind once collected" do
    before = Segments.held()

    Segments.in_process(fn ->
      :rand.seed(:exsss, {1, 2, 3})
      Enum.reduce(1..@calls, [Shmex.new("start")], fn _, pool -> call(pool) end)
    end)

    assert Segments.eventually(fn -> Segments.held() == before end),
           "held before: #{inspect(before)}, after: #{inspect(Segments.held())}"
  end

  defp call(pool) do
    shm = Enum.random(pool)
    other = Enum.random(pool)
    n = :rand.uniform(2_000) - 1

    result =
      try do
        case :rand.uniform(14) do
          1 -> Native.allocate(%Shmex{capacity: n})
          2 -> Native.allocate(%Shmex{name: shm.name})
          3 -> Native.write(shm, :binary.copy(<<n>>, n))
          4 -> Native.read(shm, n)
          5 -> Native.split_at(shm, n)
          6 -> Native.append(shm, other)
          7 -> Native.trim(shm, n)
          8 -> Native.set_capacity(shm, n)
          9 -> Native.add_guard(%{shm | guard: nil})
          10 -> Native.read(%{shm | guard: nil})
          11 -> Native.read(%{shm | size: n, capacity: n})
          12 -> Native.read(%Shmex{name: Segments.unique_name(), size: 1, capacity: 1})
          13 -> Native.write(%{shm | name: "/a\0b"}, "x")
          14 -> Native.allocate(%Shmex{name: "/no/such/dir"})
        end
      rescue
        ArgumentError -> :raised
      end

    case result do
      {:ok, {%Shmex{} = left, %Shmex{} = right}} -> Enum.take([left, right | pool], 50)
      {:ok, %Shmex{} = shm} -> Enum.take([shm | pool], 50)
      _ -> pool
    end
  end
end
