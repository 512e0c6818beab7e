defmodule Shmex.RustApiTest do
  # A NIF library of its own (native/shmex_example) using the shmex crate on
  # structs made here, and making structs used here.
  use ExUnit.Case, async: true

  alias Shmex.Native
  alias Shmex.Test.Segments

  test "a Rust NIF reads a struct's data in place" do
    data = :rand.bytes(100_000)

    assert ShmexExample.Nif.checksum(Shmex.new(data, 200_000)) ==
             Enum.sum(:binary.bin_to_list(data))

    assert ShmexExample.Nif.checksum(Shmex.new("")) == 0
  end

  test "a Rust NIF changes a struct's data in place" do
    shm = Shmex.new("stressed")
    assert ShmexExample.Nif.reverse(shm) == :ok
    assert Native.read(shm) == {:ok, "desserts"}
  end

  test "a Rust NIF takes a struct as a handle and returns it updated" do
    shm = Map.put(Shmex.new("ab"), :extra, :kept)
    assert %{size: 3, capacity: 3, extra: :kept} = pushed = ShmexExample.Nif.push(shm, ?c)
    assert {pushed.name, pushed.guard} == {shm.name, shm.guard}
    assert Native.read(pushed) == {:ok, "abc"}
    assert ShmexExample.Nif.push(%{shm | size: 9}, ?d) == {:error, :invalid_payload}
  end

  test "a Rust NIF makes guarded segments this library uses and collects" do
    name =
      Segments.in_process(fn ->
        shm = ShmexExample.Nif.filled(10, ?a)
        assert %Shmex{size: 10, capacity: 10} = shm
        assert Native.read(shm) == {:ok, "aaaaaaaaaa"}
        # Its guard is the example library's own resource type, but the
        # VM's primary (this library) counts it: the segment is guarded.
        assert Native.add_guard(shm) == {:error, :already_guarded}
        shm.name
      end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  test "the checks of Shmex.Native apply" do
    shm = Shmex.new("abc")
    assert ShmexExample.Nif.checksum(%{shm | size: 4}) == {:error, :invalid_payload}

    assert ShmexExample.Nif.checksum(%{shm | name: Segments.unique_name()}) ==
             {:error, {:enoent, :shm_open}}

    assert_raise ArgumentError, ~r/shm is not a %Shmex{} struct/, fn ->
      ShmexExample.Nif.checksum(:nope)
    end

    assert_raise ArgumentError, ~r/allocate it first/, fn ->
      ShmexExample.Nif.reverse(%Shmex{})
    end
  end
end
