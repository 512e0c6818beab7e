defmodule ShmexTest do
  use ExUnit.Case, async: true
  doctest Shmex
  doctest Shmex.Native

  alias Shmex.Test.Segments

  test "the struct has exactly the fields of 0.5.1, with its defaults" do
    assert Map.from_struct(%Shmex{}) == %{name: nil, guard: nil, size: 0, capacity: 4096}
  end

  test "empty/0 allocates 4096 bytes" do
    shm = Shmex.empty()
    assert {shm.size, shm.capacity} == {0, 4096}
    assert Segments.real_size(shm) == 4096
  end

  test "new/2 takes the larger of the capacity and the data's size" do
    assert %Shmex{size: 5, capacity: 5} = Shmex.new("12345", 2)
    assert %Shmex{size: 0, capacity: 0} = Shmex.new("")
  end

  test "set_capacity/2 and to_binary/1" do
    shm = Shmex.new("abcdef") |> Shmex.set_capacity(100)
    assert {shm.size, shm.capacity} == {6, 100}
    assert Shmex.to_binary(shm) == "abcdef"
  end

  test "ensure_not_gc/1 returns :ok" do
    assert Shmex.ensure_not_gc(Shmex.empty()) == :ok
  end

  test "errors are raised as Shmex.Error" do
    gone = %Shmex{name: Segments.unique_name(), size: 0, capacity: 0}
    error = assert_raise Shmex.Error, fn -> Shmex.to_binary(gone) end
    assert error.reason == {:enoent, :shm_open}

    assert Exception.message(error) ==
             "shared memory shm_open failed: no such file or directory (:enoent)"

    error = assert_raise Shmex.Error, fn -> Shmex.set_capacity(%{Shmex.new("x") | size: 2}, 1) end
    assert Exception.message(error) == "shared memory operation failed: :invalid_payload"
  end

  test "malformed arguments raise ArgumentError" do
    assert_raise ArgumentError, ~r/capacity must be a non-negative integer/, fn ->
      Shmex.empty(-1)
    end

    assert_raise ArgumentError, ~r/data must be a binary/, fn -> Shmex.new(:data) end
    assert_raise ArgumentError, ~r/capacity must be/, fn -> Shmex.new("x", 1.5) end
    assert_raise ArgumentError, ~r/shm is not a %Shmex{} struct/, fn -> Shmex.to_binary("x") end
  end
end
