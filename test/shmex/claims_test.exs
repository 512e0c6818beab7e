defmodule Shmex.ClaimsTest do
  # A struct's size and capacity are claims; the segment is the truth. Each
  # of these made 0.5.1 read or write past the end of a mapping (SIGBUS).
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.Segments

  defp calls_that_check do
    [
      read: &Native.read/1,
      read_part: &Native.read(&1, 1),
      set_capacity: &Native.set_capacity(&1, 1),
      split_at: &Native.split_at(&1, 1),
      append_to: &Native.append(&1, Shmex.new("x")),
      append_from: &Native.append(Shmex.new("x"), &1),
      trim: &Native.trim/1,
      trim_front: &Native.trim(&1, 1)
    ]
  end

  defp assert_every_call_refuses(shm) do
    for {call_name, call} <- calls_that_check() do
      assert {call_name, call.(shm)} == {call_name, {:error, :invalid_payload}}
    end
  end

  test "a struct claiming more data than capacity" do
    shm = Shmex.new("abcd", 8)
    assert_every_call_refuses(%{shm | size: 9})
  end

  test "a struct claiming more capacity than the segment has" do
    shm = Shmex.new("abcd")
    assert_every_call_refuses(%{shm | size: 4, capacity: 1 <<< 20})
  end

  test "a stale copy of a struct whose segment was shrunk since" do
    shm = Shmex.new(String.duplicate("x", 10_000))
    {:ok, _trimmed} = Native.trim(shm, 9_000)
    assert_every_call_refuses(shm)
  end

  test "a segment truncated by another OS process before the call" do
    shm = Shmex.new(String.duplicate("y", 100_000))
    # Map it, so the kept mapping is longer than the segment once truncated.
    assert {:ok, _} = Native.read(shm)
    {_, 0} = System.cmd("truncate", ["-s", "10", Segments.path(shm)])
    assert_every_call_refuses(shm)
    assert Native.read(%{shm | size: 10, capacity: 10}) == {:ok, "yyyyyyyyyy"}
  end

  test "an unguarded struct (made elsewhere) is checked the same way" do
    shm = Shmex.new("abcd")
    assert_every_call_refuses(%{shm | guard: nil, size: 5})
    assert Native.read(%{shm | guard: nil}) == {:ok, "abcd"}
    Shmex.ensure_not_gc(shm)
  end

  test "write puts a forged or stale struct right instead of refusing it" do
    shm = Shmex.new("abcd")
    {:ok, _} = Native.trim(shm, 3)

    assert {:ok, written} = Native.write(%{shm | size: 99, capacity: 50}, "fresh")
    assert {written.size, written.capacity} == {5, 50}
    assert Segments.real_size(shm) == 50
    assert Native.read(written) == {:ok, "fresh"}
  end

  test "a segment grown by another copy of the struct is fine" do
    shm = Shmex.new("abc")
    {:ok, _grown} = Native.write(shm, String.duplicate("z", 10_000))
    # `shm` still claims 3 of 3 bytes: true, the segment just has more.
    assert Native.read(shm) == {:ok, "zzz"}
  end

  test "a read larger than all memory is refused before its result is allocated" do
    shm = Shmex.empty(1 <<< 50)
    huge = %{shm | size: 1 <<< 50}
    assert Native.read(huge) == {:error, {:enomem, :mmap}}
    assert Native.read(%{huge | guard: nil}) == {:error, {:enomem, :mmap}}
  end

  test "add_guard/1 takes any existing segment; the claims are checked when it is used" do
    shm = Shmex.new("abcd")
    forged = %{shm | guard: nil, size: 9, capacity: 8}
    assert {:ok, guarded} = Native.add_guard(forged)
    assert {guarded.size, guarded.capacity} == {9, 8}
    assert Native.read(guarded) == {:error, :invalid_payload}
    Shmex.ensure_not_gc(shm)
  end

  test "a struct without a segment must be allocated first" do
    for {_name, call} <- [add_guard: &Native.add_guard/1] ++ calls_that_check() do
      assert_raise ArgumentError, ~r/allocate it first/, fn -> call.(%Shmex{}) end
    end

    assert_raise ArgumentError, ~r/allocate it first/, fn -> Native.write(%Shmex{}, "x") end
  end

  test "a struct from another host names no segment here" do
    elsewhere = %Shmex{name: Segments.unique_name(), guard: make_ref(), size: 1, capacity: 1}

    for {call_name, call} <-
          [add_guard: &Native.add_guard(%{&1 | guard: nil})] ++ calls_that_check() do
      assert {call_name, call.(elsewhere)} == {call_name, {:error, {:enoent, :shm_open}}}
    end

    assert Native.write(elsewhere, "x") == {:error, {:enoent, :shm_open}}
  end
end
