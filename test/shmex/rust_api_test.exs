defmodule Shmex.RustApiTest do
  # A NIF library of its own (native/shmex_example) using the shmex crate on
  # structs made here, and making structs used here.
  use ExUnit.Case, async: true

  alias Shmex.Native
  alias Shmex.Native.Nif
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

  test "a Rust NIF reads its segment from inside data while an Elixir write waits" do
    shm = Shmex.new("abc")
    {byte, token} = nested_read_past_a_queued_write(shm, 5)
    assert byte == ?a
    # The write queued meanwhile has its turn once the NIF's ends.
    assert_receive {:shmex_segment_free, ^token}, 5_000
    assert {:ok, written} = Nif.write(shm, "z")
    assert Native.read(written) == {:ok, "z"}
  end

  test "a Rust NIF's change from inside data is refused, not left waiting" do
    shm = Shmex.new("abc")
    task = Task.async(fn -> ShmexExample.Nif.nested_write(shm, ?z) end)
    assert Task.yield(task, 5_000) == {:ok, {:error, {:edeadlk, :shm_open}}}
    assert Native.read(shm) == {:ok, "abc"}
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

  # Runs ShmexExample.Nif.nested_read/2 (its nested read 200 ms into its
  # turn) in a task, and queues a write of the test's own behind that turn
  # meanwhile: the byte read and the write's token. A nested read that
  # queued behind the write would never return.
  defp nested_read_past_a_queued_write(shm, attempts) do
    task = Task.async(fn -> ShmexExample.Nif.nested_read(shm, 200) end)

    case write_until_queued(shm, task) do
      {:wait, token} ->
        case Task.yield(task, 5_000) || Task.shutdown(task, :brutal_kill) do
          {:ok, byte} -> {byte, token}
          nil -> flunk("the nested read waits behind the write, for ever")
        end

      :missed when attempts > 1 ->
        nested_read_past_a_queued_write(shm, attempts - 1)

      :missed ->
        flunk("no write met the NIF's turn")
    end
  end

  # Writes until a write queues (the NIF holds its turn), or the NIF is done.
  defp write_until_queued(shm, task) do
    case Task.yield(task, 0) do
      {:ok, _} ->
        :missed

      nil ->
        case Nif.write(shm, "abc") do
          {:wait, _} = queued -> queued
          _ -> write_until_queued(shm, task)
        end
    end
  end
end
