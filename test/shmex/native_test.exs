defmodule Shmex.NativeTest do
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.Segments

  defp allocate!(capacity \\ 4096) do
    {:ok, shm} = Native.allocate(%Shmex{capacity: capacity})
    shm
  end

  defp filled!(data, capacity \\ nil) do
    {:ok, shm} = Native.write(allocate!(capacity || byte_size(data)), data)
    shm
  end

  defp read!(shm) do
    {:ok, data} = Native.read(shm)
    data
  end

  describe "allocate/1" do
    test "creates a guarded segment of the given capacity under a fresh name" do
      assert {:ok, shm} = Native.allocate(%Shmex{capacity: 100})
      assert %Shmex{name: "/shmex-" <> _, size: 0, capacity: 100} = shm
      assert is_reference(shm.guard)
      assert byte_size(shm.name) <= 31
      assert Segments.real_size(shm) == 100
      assert read!(%{shm | size: 100}) == <<0::800>>
    end

    test "makes the segment readable and writable by its owner only" do
      shm = allocate!()
      assert (File.stat!(Segments.path(shm)).mode &&& 0o777) == 0o600
    end

    test "gives every segment its own name" do
      names = for _ <- 1..1000, do: allocate!(0).name
      assert names |> Enum.uniq() |> length() == 1000
    end

    test "uses the name it is given, and refuses to reuse it" do
      name = Segments.unique_name()
      assert {:ok, %Shmex{name: ^name} = shm} = Native.allocate(%Shmex{name: name, capacity: 10})
      assert Segments.exists?(name)
      assert Native.allocate(%Shmex{name: name}) == {:error, {:eexist, :shm_open}}
      Shmex.ensure_not_gc(shm)
    end

    test "keeps the struct's size, as 0.5.1 does" do
      assert {:ok, %Shmex{size: 3, capacity: 10}} = Native.allocate(%Shmex{size: 3, capacity: 10})
    end

    test "refuses a size over the capacity" do
      assert Native.allocate(%Shmex{size: 11, capacity: 10}) == {:error, :invalid_payload}
    end

    test "makes zero-byte segments" do
      shm = allocate!(0)
      assert Segments.real_size(shm) == 0
      assert Native.read(shm) == {:ok, ""}
    end

    test "takes 64-bit capacities, reserving nothing until data is written" do
      shm = allocate!(5 <<< 30)
      assert shm.capacity == 5 <<< 30
      assert Segments.real_size(shm) == 5 <<< 30
      assert {:ok, shm} = Native.write(shm, "tail")
      assert {shm.size, shm.capacity} == {4, 5 <<< 30}
      assert read!(shm) == "tail"
      {blocks, 0} = System.cmd("stat", ["-c", "%b", Segments.path(shm)])
      assert String.to_integer(String.trim(blocks)) * 512 < 1 <<< 20
      # Until here: `stat` needs the segment, which the guard would unlink.
      Native.ensure_not_gc(shm)
    end

    test "reports capacities no file can have" do
      assert Native.allocate(%Shmex{capacity: 1 <<< 63}) == {:error, {:efbig, :ftruncate}}
    end

    test "passes on the OS's verdict on names" do
      long = "/" <> String.duplicate("a", 256)
      assert Native.allocate(%Shmex{name: long}) == {:error, {:enametoolong, :shm_open}}
      assert Native.read(%Shmex{name: long}) == {:error, {:enametoolong, :shm_open}}
      assert Native.allocate(%Shmex{name: "/inner/slash"}) == {:error, {:einval, :shm_open}}
    end
  end

  describe "add_guard/1" do
    test "refuses a struct that already has our guard" do
      assert Native.add_guard(allocate!()) == {:error, :already_guarded}
    end

    test "guards a segment made elsewhere, replacing any foreign guard" do
      for foreign <- [nil, make_ref(), :atomics.new(1, [])] do
        name = Segments.unique_name()
        File.write!(Segments.path(name), "made elsewhere")
        shm = %Shmex{name: name, guard: foreign, size: 14, capacity: 14}
        assert {:ok, guarded} = Native.add_guard(shm)
        assert is_reference(guarded.guard) and guarded.guard != foreign
        assert Native.add_guard(guarded) == {:error, :already_guarded}
        assert read!(guarded) == "made elsewhere"
      end
    end

    test "refuses another library's reference over a segment guarded in this VM" do
      # That reference is the guard of a C or Rust library (as unifex's);
      # a copy whose guard was stripped gets a second guard.
      shm = filled!("guarded here")
      assert Native.add_guard(%{shm | guard: make_ref()}) == {:error, :already_guarded}
      assert {:ok, %Shmex{guard: second}} = Native.add_guard(%{shm | guard: nil})
      assert is_reference(second) and second != shm.guard
    end

    test "reports a segment that does not exist" do
      missing = %Shmex{name: Segments.unique_name(), size: 0, capacity: 1}
      assert Native.add_guard(missing) == {:error, {:enoent, :shm_open}}
    end

    test "accepts any existing segment: claims are checked when it is used, as in 0.5.1" do
      name = Segments.unique_name()
      File.touch!(Segments.path(name))
      # An empty file, and a struct claiming 4096 bytes of it.
      assert {:ok, guarded} = Native.add_guard(%Shmex{name: name})
      assert guarded.capacity == 4096 and is_reference(guarded.guard)
      assert Native.read(%{guarded | size: 1}) == {:error, :invalid_payload}
      assert {:ok, %Shmex{size: 2}} = Native.write(guarded, "ok")
    end
  end

  describe "set_capacity/2" do
    test "grows the segment, keeping the data" do
      shm = filled!("abc")
      assert {:ok, grown} = Native.set_capacity(shm, 1000)

      assert {grown.name, grown.guard, grown.size, grown.capacity} ==
               {shm.name, shm.guard, 3, 1000}

      assert Segments.real_size(shm) == 1000
      assert read!(grown) == "abc"
    end

    test "shrinks the segment, dropping data past the new capacity" do
      assert {:ok, shrunk} = Native.set_capacity(filled!("abcdef"), 2)
      assert {shrunk.size, shrunk.capacity} == {2, 2}
      assert Segments.real_size(shrunk) == 2
      assert read!(shrunk) == "ab"
      assert {:ok, %Shmex{size: 0, capacity: 0}} = Native.set_capacity(shrunk, 0)
    end

    test "refuses a stale struct whose segment was shrunk since" do
      shm = filled!("abcdef")
      {:ok, _} = Native.set_capacity(shm, 2)
      assert Native.set_capacity(shm, 100) == {:error, :invalid_payload}
    end
  end

  describe "read/1 and read/2" do
    test "read the data, or its beginning" do
      shm = filled!("0123456789", 100)
      assert Native.read(shm) == {:ok, "0123456789"}
      assert Native.read(shm, 4) == {:ok, "0123"}
      assert Native.read(shm, 0) == {:ok, ""}
    end

    test "refuse to read past the data" do
      shm = filled!("abc", 100)
      assert Native.read(shm, 4) == {:error, :invalid_read_size}
    end

    test "report a segment that is gone" do
      gone = %Shmex{name: Segments.unique_name(), size: 1, capacity: 1}
      assert Native.read(gone) == {:error, {:enoent, :shm_open}}
    end

    @tag skip: Shmex.Test.Space.lacking(2 * (64 <<< 20), "a 64 MiB round trip")
    test "round-trip 64 MiB" do
      data = :crypto.strong_rand_bytes(64 <<< 20)
      shm = filled!(data)
      assert read!(shm) == data
    end
  end

  describe "write/2" do
    test "overwrites the data from the start" do
      shm = filled!("abcdef")
      assert {:ok, shm} = Native.write(shm, "XY")
      assert {shm.size, shm.capacity} == {2, 6}
      assert read!(shm) == "XY"
      assert read!(%{shm | size: 6}) == "XYcdef"
    end

    test "grows the capacity to fit the data" do
      shm = allocate!(2)
      assert {:ok, written} = Native.write(shm, "abcdef")
      assert {written.name, written.guard} == {shm.name, shm.guard}
      assert {written.size, written.capacity} == {6, 6}
      assert Segments.real_size(shm) == 6
      assert read!(written) == "abcdef"
    end

    test "writes an empty binary" do
      assert {:ok, %Shmex{size: 0, capacity: 10}} = Native.write(filled!("x", 10), "")
    end
  end

  describe "split_at/2" do
    test "moves the tail into a new guarded segment" do
      shm = filled!("hello world", 20)
      assert {:ok, {left, right}} = Native.split_at(shm, 5)
      assert left == %{shm | size: 5}
      assert right.name != shm.name and is_reference(right.guard) and right.guard != shm.guard
      assert {right.size, right.capacity} == {6, 6}
      assert Segments.real_size(right) == 6
      assert read!(left) == "hello"
      assert read!(right) == " world"
    end

    test "splits at either end" do
      shm = filled!("abc")
      assert {:ok, {left, right}} = Native.split_at(shm, 3)
      assert {read!(left), read!(right), right.capacity} == {"abc", "", 0}
      assert {:ok, {left, right}} = Native.split_at(shm, 0)
      assert {read!(left), read!(right)} == {"", "abc"}
    end

    test "refuses a position past the data" do
      assert Native.split_at(filled!("abc", 10), 4) == {:error, :invalid_position}
    end
  end

  describe "append/2" do
    test "appends the source's data to the target, which keeps its name and guard" do
      target = filled!("abc", 100)
      source = filled!("defg")
      assert {:ok, appended} = Native.append(target, source)
      assert {appended.name, appended.guard} == {target.name, target.guard}
      assert {appended.size, appended.capacity} == {7, 7}
      assert Segments.real_size(target) == 7
      assert read!(appended) == "abcdefg"
      assert read!(source) == "defg"
    end

    test "appends a segment to itself" do
      shm = filled!("abc")
      assert {:ok, doubled} = Native.append(shm, shm)
      assert read!(doubled) == "abcabc"
    end

    test "appends empty data on either side" do
      assert {:ok, shm} = Native.append(allocate!(0), filled!("xyz"))
      assert read!(shm) == "xyz"
      assert {:ok, shm} = Native.append(shm, allocate!(0))
      assert read!(shm) == "xyz"
    end
  end

  describe "trim/1 and trim/2" do
    test "trim/1 shrinks the capacity to the data" do
      shm = filled!("abc", 100)
      assert {:ok, trimmed} = Native.trim(shm)
      assert trimmed == %{shm | capacity: 3}
      assert Segments.real_size(shm) == 3
      assert read!(trimmed) == "abc"
    end

    test "trim/2 drops leading bytes in place" do
      shm = filled!("hello world", 100)
      assert {:ok, trimmed} = Native.trim(shm, 6)
      assert trimmed == %{shm | size: 5, capacity: 5}
      assert read!(trimmed) == "world"
      assert {:ok, %Shmex{size: 0, capacity: 0}} = Native.trim(trimmed, 5)
    end

    test "trim/2 refuses to drop more than the data" do
      assert Native.trim(filled!("abc", 10), 4) == {:error, :invalid_trim_size}
    end
  end

  describe "ensure_not_gc/1" do
    test "returns :ok for a struct" do
      assert Native.ensure_not_gc(allocate!()) == :ok
    end
  end

  describe "malformed arguments" do
    test "raise ArgumentError naming the argument" do
      shm = allocate!()

      for {call, message} <- [
            {fn -> Native.read(:not_a_struct) end, "shm is not a %Shmex{} struct"},
            {fn -> Native.read(%{name: "/x", size: 0, capacity: 0, guard: nil}) end,
             "shm is not a %Shmex{} struct"},
            {fn -> Native.read(%Shmex{}) end, "shm.name is nil"},
            {fn -> Native.read(shm, -1) end, "read_size must be a non-negative integer"},
            {fn -> Native.read(%{shm | size: -1}) end, "shm.size must be a non-negative integer"},
            {fn -> Native.read(%{shm | capacity: 1.0}) end,
             "shm.capacity must be a non-negative integer"},
            {fn -> Native.read(%{shm | name: :atom}) end, "shm.name must be a binary or nil"},
            {fn -> Native.read(%{shm | name: "/a\0b"}) end, "shm.name contains a NUL byte"},
            {fn -> Native.allocate(%Shmex{name: "/a\0b"}) end, "shm.name contains a NUL byte"},
            {fn -> Native.allocate(%Shmex{capacity: 1 <<< 64}) end,
             "shm.capacity must be a non-negative integer"},
            {fn -> Native.write(shm, ~c"list") end, "data must be a binary"},
            {fn -> Native.set_capacity(shm, -5) end, "capacity must be a non-negative integer"},
            {fn -> Native.split_at(shm, :middle) end, "position must be a non-negative integer"},
            {fn -> Native.trim(shm, "1") end, "bytes must be a non-negative integer"},
            {fn -> Native.append(shm, %{}) end, "source is not a %Shmex{} struct"},
            {fn -> Native.append(%Shmex{}, shm) end, "target.name is nil"},
            {fn -> Native.add_guard(%Shmex{}) end, "shm.name is nil"},
            {fn -> Native.ensure_not_gc(%Shmex{}) end, "shm.name is nil"},
            {fn -> Native.ensure_not_gc(nil) end, "shm is not a %Shmex{} struct"}
          ] do
        error = assert_raise ArgumentError, call
        assert error.message =~ message
      end
    end
  end
end
