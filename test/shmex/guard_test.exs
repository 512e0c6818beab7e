defmodule Shmex.GuardTest do
  use ExUnit.Case, async: true

  alias Shmex.Native
  alias Shmex.Test.Segments

  test "collecting the last reference unlinks the segment" do
    name = Segments.in_process(fn -> Shmex.new("short-lived").name end)
    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  test "the segment lives as long as any copy of the struct" do
    shm = Shmex.new("kept")
    copy = Segments.in_process(fn -> %{shm | size: 2} end)
    :erlang.garbage_collect()
    assert Segments.exists?(shm)
    assert Native.read(copy) == {:ok, "ke"}
  end

  test "parts made by split_at have guards of their own" do
    {left_name, right_name} =
      Segments.in_process(fn ->
        {:ok, {left, right}} = Native.split_at(Shmex.new("leftright"), 4)
        {left.name, right.name}
      end)

    assert Segments.eventually(fn ->
             not Segments.exists?(left_name) and not Segments.exists?(right_name)
           end)
  end

  test "a guard added to a segment made elsewhere unlinks it" do
    name = Segments.unique_name()

    Segments.in_process(fn ->
      {:ok, shm} = Native.allocate(%Shmex{name: name, capacity: 10})
      # A struct as another library would make it: no guard of ours.
      {:ok, _guarded} = Native.add_guard(%{shm | guard: nil})
    end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  test "the guard field round-trips untouched, whatever it holds" do
    calls = [
      &Native.write(&1, "xyz"),
      &Native.set_capacity(&1, 20),
      &Native.split_at(&1, 2),
      &Native.append(&1, Shmex.new("ghi")),
      &Native.trim(&1),
      &Native.trim(&1, 1)
    ]

    for guard <- [nil, make_ref(), :atomics.new(1, []), :ours], call <- calls do
      shm = Shmex.new("abcdef", 10)
      guard = if guard == :ours, do: shm.guard, else: guard
      assert {:ok, result} = call.(%{shm | guard: guard})
      assert %Shmex{guard: ^guard} = with({left, _right} <- result, do: left)
      # The real guard stays referenced until the call is done.
      Shmex.ensure_not_gc(shm)
    end
  end

  test "a struct carrying the guard of another segment is not trusted with it" do
    a = Shmex.new("aaaa")
    b = Shmex.new("bb")
    forged = %{b | guard: a.guard, size: 2, capacity: 2}
    assert Native.read(forged) == {:ok, "bb"}
    assert Native.add_guard(forged) == {:error, :already_guarded}
  end

  test "a struct carrying its own guard is still taken by the name it spells" do
    shm = Shmex.new("abc")
    "/" <> bare = shm.name

    for spelling <- [bare, "//" <> bare] do
      assert Native.read(%{shm | name: spelling}) == {:ok, "abc"}
    end

    assert_raise ArgumentError, ~r/NUL/, fn -> Native.read(%{shm | name: shm.name <> "\0"}) end
    assert Native.read(%{shm | name: "/.shmex-" <> bare}) == {:error, {:eacces, :shm_open}}
    assert Native.read(%{shm | name: shm.name <> "x"}) == {:error, {:enoent, :shm_open}}
    too_long = String.duplicate("/", 5000) <> bare
    assert Native.read(%{shm | name: too_long}) == {:error, {:enametoolong, :shm_open}}
  end
end
