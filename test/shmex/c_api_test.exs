defmodule Shmex.CApiTest do
  # A C NIF compiled against the installed shmex/shmex.h and linked with
  # libshmex.a (test/support/c_client), used as unifex uses Shmex 0.5.1's
  # C API, on segments made on both sides.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.{Segments, Turns}
  alias ShmexCClient.Nif, as: C

  test "a segment allocated in C is read here, and its C guard unlinks it" do
    name =
      Segments.in_process(fn ->
        assert {:ok, shm} = C.allocate(1000, ?x)
        assert %Shmex{name: "/shmex-" <> _, size: 1000, capacity: 1000} = shm
        assert is_reference(shm.guard)
        assert Native.read(shm) == {:ok, String.duplicate("x", 1000)}
        # The C library's guard guards it in this VM too.
        assert Native.add_guard(shm) == {:error, :already_guarded}
        shm.name
      end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  test "C maps and checksums a struct made here" do
    data = :rand.bytes(50_000)
    assert C.checksum(Shmex.new(data, 80_000)) == {:ok, Enum.sum(:binary.bin_to_list(data))}
  end

  test "C writes through a mapping, growing the segment as unifex reallocates" do
    shm = Shmex.new("abc")
    assert {:ok, written} = C.write(shm, "hello world")

    assert {written.name, written.guard, written.size, written.capacity} ==
             {shm.name, shm.guard, 11, 11}

    assert Segments.real_size(shm) == 11
    assert Native.read(written) == {:ok, "hello world"}
  end

  test "C resizes, clamping the size" do
    shm = Shmex.new("abcdef")
    assert {:ok, grown} = C.resize(shm, 100)
    assert {grown.size, grown.capacity, Segments.real_size(shm)} == {6, 100, 100}
    assert {:ok, shrunk} = C.resize(grown, 2)
    assert {shrunk.size, shrunk.capacity} == {2, 2}
    assert Native.read(shrunk) == {:ok, "ab"}
    assert C.resize(shrunk, 1 <<< 32) == {:error, {:efbig, :ftruncate}}
  end

  @tag skip: Shmex.Test.Space.lacking(2 * (128 <<< 20), "a 128 MiB write while C resizes")
  test "C's shmex_set_capacity takes its turn with Elixir's calls on the segment" do
    len = 128 <<< 20
    shm = Shmex.new(:binary.copy(<<4>>, len))
    data = :binary.copy(<<5>>, len)
    # A long write holds the segment, and a read of ours waits behind it.
    assert {:wait, token} = Turns.park_behind_a_write(shm, data, 50)
    # Seen from outside, the write is under way: begun, not done.
    {:ok, file} = :file.open(Segments.path(shm), [:read, :raw, :binary])
    assert under_way?(file, len, System.monotonic_time(:millisecond) + 5_000)

    # C shrinks the segment meanwhile: it waits for the write (or finishes
    # it), which a shrink in its midst would fail, or, writing past the end,
    # leave with zeros where it had written before the shrink.
    {:ok, resized} = Task.await(Task.async(fn -> C.resize(shm, 4096) end), 10_000)
    assert_receive {:written, written}, 10_000
    assert written == {:ok, %{shm | size: len, capacity: len}}
    assert {resized.capacity, Segments.real_size(shm)} == {4096, 4096}

    # The blocked C call held its scheduler; our turn was not waited for
    # long, and our read, queued anew, comes after the others.
    assert_receive {:shmex_segment_free, ^token}, 5_000
    assert Native.read(%{shm | size: 1, capacity: 4096}) == {:ok, <<5>>}
  end

  defp under_way?(file, len, deadline) do
    case {:file.pread(file, 0, 1), :file.pread(file, len - 1, 1)} do
      {{:ok, <<5>>}, {:ok, <<4>>}} -> true
      _ -> System.monotonic_time(:millisecond) < deadline and under_way?(file, len, deadline)
    end
  end

  test "shmex_get_from_term takes %Shmex{} structs whose sizes fit its fields" do
    shm = Shmex.new("abc")
    assert C.parse(shm) and C.parse(%Shmex{})
    refute C.parse(%{shm | size: 1 <<< 32})
    refute C.parse(%{shm | capacity: -1})
    refute C.parse(%{shm | name: "/a\0b"})
    refute C.parse(Map.delete(shm, :guard))
    refute C.parse(:not_a_struct)
  end

  test "a struct that does not fit its segment is an error, not a crash" do
    shm = Shmex.new("0123456789")
    assert C.checksum(%{shm | capacity: 1 <<< 20}) == {:error, :invalid_payload}
    assert C.checksum(%{shm | size: 11}) == {:error, :invalid_payload}
    assert C.checksum(%Shmex{}) == {:error, :invalid_payload}

    missing = %Shmex{name: Segments.unique_name(), size: 1, capacity: 1}
    assert C.checksum(missing) == {:error, {:enoent, :shm_open}}
  end

  test "mapping twice or resizing while mapped is refused; unmapping twice is harmless" do
    assert C.misuse(Shmex.new("abc")) == {:ok, :shm_is_mapped, :shm_is_mapped, :ok}
  end

  test "zero-capacity segments map nothing and work" do
    assert {:ok, shm} = C.allocate(0, 0)
    assert shm.capacity == 0
    assert C.checksum(shm) == {:ok, 0}
    assert Native.read(shm) == {:ok, ""}
  end

  test "a guard of the C library's own type round-trips through Elixir" do
    shm = Shmex.new("guarded twice")
    c_guarded = C.guard(%{shm | guard: nil})
    assert is_reference(c_guarded.guard)
    assert {:ok, %Shmex{guard: guard}} = Native.write(c_guarded, "still here")
    assert guard == c_guarded.guard
    assert Native.add_guard(c_guarded) == {:error, :already_guarded}
    Shmex.ensure_not_gc(shm)
  end

  test "guards of one segment are counted in the VM: the last one collected unlinks it" do
    {name, holder} =
      Segments.in_process(fn ->
        {:ok, shm} = C.allocate(10, ?c)
        # A copy whose guard was stripped gets a second guard, ours.
        {:ok, ours} = Native.add_guard(%{shm | guard: nil})

        holder =
          spawn(fn ->
            receive do: (:drop -> :ok)
            Shmex.ensure_not_gc(ours)
          end)

        {shm.name, holder}
      end)

    # The process holding the C guard is gone, and the guard collected; ours
    # still holds the segment.
    Process.sleep(50)
    assert Segments.exists?(name)
    assert Native.read(%Shmex{name: name, size: 10, capacity: 10}) == {:ok, "cccccccccc"}
    ref = Process.monitor(holder)
    send(holder, :drop)
    assert_receive {:DOWN, ^ref, :process, ^holder, _}
    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  @tag :beam
  test "a C library works on its own until the Shmex NIF loads, then through it" do
    # In a VM of its own, where Shmex.Native.Nif is not loaded until first used.
    code = ~S"""
    Shmex.Test.Beam.load_natives()
    IO.puts("primary loaded: #{:code.is_loaded(Shmex.Native.Nif) != false}")
    {:ok, early} = ShmexCClient.Nif.allocate(10, ?e)
    Shmex.new("the primary loads")
    Process.sleep(100)
    {:ok, late} = ShmexCClient.Nif.allocate(10, ?l)
    # Made through the primary: its C guard counts with Elixir's guards.
    IO.inspect(Shmex.Native.add_guard(late), label: "late")
    # Made before: its C guard is the C library's own.
    {:ok, second} = Shmex.Native.add_guard(early)
    IO.puts("early guarded anew")
    IO.inspect(ShmexCClient.Nif.checksum(early), label: "early checksum")
    IO.inspect(ShmexCClient.Nif.checksum(late), label: "late checksum")
    Shmex.ensure_not_gc(second)
    """

    {output, 0} = Shmex.Test.Beam.run(code)
    assert output =~ "primary loaded: false", output
    assert output =~ "late: {:error, :already_guarded}", output
    assert output =~ "early guarded anew", output
    assert output =~ "early checksum: {:ok, 1010}", output
    assert output =~ "late checksum: {:ok, 1080}", output
  end

  test "C and Elixir refuse the same names, with the same reasons" do
    names = [
      "/a/b",
      "/" <> String.duplicate("n", 300),
      "/.shmex-session-x",
      "/",
      Segments.unique_name()
    ]

    for name <- names do
      shm = %Shmex{name: name, size: 0, capacity: 1}
      assert {:error, {posix, :shm_open}} = Native.read(shm)
      assert C.checksum(shm) == {:error, {posix, :shm_open}}, name
      assert C.guard(shm).guard == nil, name
    end
  end

  test "shmex_init gives an unallocated struct" do
    assert C.blank(10) == %Shmex{name: nil, guard: nil, size: 0, capacity: 10}
  end

  test "generated names are unique and as long as 0.5.1's buffer allows" do
    names = for _ <- 1..100, do: C.generate_name()
    assert Enum.uniq(names) == names
    assert Enum.all?(names, &(String.starts_with?(&1, "/shmex-") and byte_size(&1) == 31))
  end

  test "error terms read errno; OK and SHM_MAPPED raise, as in 0.5.1" do
    assert C.error_term(1) == {:error, {:enoent, :shm_open}}
    assert C.error_term(2) == {:error, {:enoent, :ftruncate}}
    assert C.error_term(3) == {:error, {:enoent, :mmap}}
    assert C.error_term(5) == {:error, :invalid_payload}

    for {code, reason} <- [{0, :ok_is_not_error}, {4, :shm_is_mapped}, {99, :unknown}] do
      assert catch_error(C.error_term(code)) == reason
    end
  end

  test "results have 0.5.1's names" do
    assert Enum.map([0, 1, 2, 3, 4, 5, 99], &C.result_name/1) ==
             [:ok, :shm_open, :ftruncate, :mmap, :shm_is_mapped, :invalid_payload, :unknown]
  end

  test "a C file using the whole 0.5.1 C API builds as bundlex builds natives" do
    # -std=c11, and implicit declarations as errors (GCC 14's default); every
    # function it names is defined by the archive.
    surface = Path.expand("../support/c_client/api_surface.c", __DIR__)
    library = Path.join(Shmex.Test.NativeBuild.scratch_dir(), "api_surface.so")

    flags =
      ~w(-std=c11 -Wall -Wextra -Werror -Werror=implicit-function-declaration -DBUNDLEX_NIF) ++
        ~w(-fPIC -shared) ++ String.split(Shmex.Build.cflags(:nif))

    link = String.split(Shmex.Build.ldflags(:nif))

    assert {_, 0} =
             System.cmd("gcc", flags ++ [surface, "-o", library | link], stderr_to_stdout: true)

    {undefined, 0} = System.cmd("nm", ["-u", library])
    assert undefined =~ "enif_"
    refute undefined =~ "shmex_"
  end

  test "unlink removes the segment by name" do
    shm = Shmex.new("doomed")
    assert C.unlink(shm) == :ok
    refute Segments.exists?(shm)
    assert C.unlink(%Shmex{}) == :invalid_payload
  end
end
