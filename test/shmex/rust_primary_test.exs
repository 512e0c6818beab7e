defmodule Shmex.RustPrimaryTest do
  # A Rust NIF on the shmex crate (native/shmex_example) and two C NIF
  # libraries on libshmex.a (test/support/c_client, loaded twice) in one VM:
  # every copy of the crate works through the VM's primary, the Shmex NIF,
  # with one count of guards and one set of turns per segment.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.Segments
  alias ShmexCClient.Nif, as: C
  alias ShmexCClient.Second, as: OtherC
  alias ShmexExample.Nif, as: Rust

  defp sum(data), do: Enum.sum(:binary.bin_to_list(data))

  defp spin_for(ms) do
    deadline = System.monotonic_time(:millisecond) + ms
    spin = fn spin -> if System.monotonic_time(:millisecond) < deadline, do: spin.(spin) end
    spin.(spin)
  end

  test "a struct the Rust NIF made is used from both C libraries and from Elixir" do
    shm = Rust.filled(1000, ?r)
    assert C.checksum(shm) == {:ok, 1000 * ?r}
    assert OtherC.checksum(shm) == {:ok, 1000 * ?r}
    assert {:ok, written} = OtherC.write(shm, "from C")
    assert Native.read(written) == {:ok, "from C"}
    assert Rust.checksum(written) == sum("from C")
    assert {:ok, grown} = C.resize(written, 4096)
    assert %{size: 7, capacity: 4096} = pushed = Rust.push(grown, ?!)
    assert Native.read(pushed) == {:ok, "from C!"}
    assert OtherC.checksum(pushed) == {:ok, sum("from C!")}

    # And the other way round: a struct one C library made, used by Rust.
    assert {:ok, c_made} = C.allocate(10, ?c)
    assert Rust.checksum(c_made) == 10 * ?c
    assert Rust.reverse(Rust.push(c_made, ?d)) == :ok
    assert OtherC.checksum(%{c_made | size: 11, capacity: 11}) == {:ok, 10 * ?c + ?d}

    assert Native.read(%{c_made | size: 11, capacity: 11}) ==
             {:ok, "d" <> String.duplicate("c", 10)}
  end

  test "a struct the Rust NIF made is already guarded, for Elixir and for Rust" do
    shm = Rust.filled(10, ?g)
    assert Native.add_guard(shm) == {:error, :already_guarded}
    assert Rust.guard(shm) == {:error, :already_guarded}

    # Structs guarded by Elixir or by C are guarded for the Rust NIF too.
    assert Rust.guard(Shmex.new("elixir's")) == {:error, :already_guarded}
    {:ok, c_made} = OtherC.allocate(3, ?o)
    assert Rust.guard(c_made) == {:error, :already_guarded}

    # A copy stripped of its guard gets a second one, counted with the first.
    assert {:ok, second} = Rust.guard(%{shm | guard: nil})
    assert Native.add_guard(second) == {:error, :already_guarded}
  end

  test "the last of two guards, Rust's and Elixir's, unlinks the segment" do
    for last <- [:elixir, :rust] do
      {name, holder} =
        Segments.in_process(fn ->
          rust_made = Rust.filled(10, ?l)
          {:ok, elixir_guarded} = Native.add_guard(%{rust_made | guard: nil})
          kept = if last == :elixir, do: elixir_guarded, else: rust_made

          holder =
            spawn(fn ->
              receive do: (:drop -> :ok)
              Shmex.ensure_not_gc(kept)
            end)

          {rust_made.name, holder}
        end)

      # The first guard is collected with the process that held it.
      Process.sleep(50)
      assert Segments.exists?(name), "#{last}'s guard holds the segment"
      assert Native.read(%Shmex{name: name, size: 10, capacity: 10}) == {:ok, "llllllllll"}
      ref = Process.monitor(holder)
      send(holder, :drop)
      assert_receive {:DOWN, ^ref, :process, ^holder, _}
      assert Segments.eventually(fn -> not Segments.exists?(name) end), "#{last} was last"
    end
  end

  @tag timeout: 300_000
  test "the Rust NIF's data_mut and write wait for a long Elixir read in flight" do
    half = 128 <<< 20
    original = :binary.copy("a", half) <> :binary.copy("b", half)
    shm = Shmex.new(original)

    for {what, change, after_change} <- [
          {"data_mut", &Rust.reverse/1, "b"},
          {"write", &Rust.fill(&1, ?c), "c"}
        ] do
      parent = self()

      reader =
        Task.async(fn ->
          send(parent, :reading)
          {:ok, data} = Native.read(shm)
          {data, System.monotonic_time()}
        end)

      assert_receive :reading
      # The read (a copy in steps on a dirty scheduler) gets under way. A
      # busy wait: a timer here was seen to fire only once the read ended.
      spin_for(10)
      started = System.monotonic_time()
      change.(shm)
      {data, read} = Task.await(reader, 120_000)

      assert started < read, "#{what} began while the read was in flight"
      # The read saw the data as it was, whole: the change waited for it
      # (when the reader's process gets to note the time is the VM's
      # business, so no clock says which ended first).
      assert data == original, "#{what} changed the data under the read"
      assert Native.read(%{shm | size: 1}) == {:ok, after_change}, what

      # As it was, for the next round.
      {:ok, _} = Native.write(shm, original)
    end
  end

  @tag :beam
  test "the Rust NIF works on its own until the Shmex NIF loads, then through it" do
    # In a VM of its own, where Shmex.Native.Nif is not loaded until first used.
    code = ~S"""
    Shmex.Test.Beam.load_natives()
    early = ShmexExample.Nif.filled(10, ?e)
    IO.inspect(ShmexExample.Nif.checksum(ShmexExample.Nif.push(early, ?!)), label: "early own")
    IO.puts("primary loaded: #{:code.is_loaded(Shmex.Native.Nif) != false}")
    Shmex.new("the primary loads")
    Process.sleep(100)
    late = ShmexExample.Nif.filled(10, ?l)
    # Made through the primary: its guard counts with Elixir's guards.
    IO.inspect(Shmex.Native.add_guard(late), label: "late")
    # Made before: its guard is the Rust NIF's own.
    {:ok, second} = Shmex.Native.add_guard(early)
    IO.puts("early guarded anew")
    IO.inspect(ShmexExample.Nif.checksum(%{early | size: 11, capacity: 11}), label: "early checksum")
    IO.inspect(ShmexExample.Nif.checksum(late), label: "late checksum")
    Shmex.ensure_not_gc(second)
    """

    {output, 0} = Shmex.Test.Beam.run(code)
    assert output =~ "early own: #{10 * ?e + ?!}", output
    assert output =~ "primary loaded: false", output
    assert output =~ "late: {:error, :already_guarded}", output
    assert output =~ "early guarded anew", output
    assert output =~ "early checksum: #{10 * ?e + ?!}", output
    assert output =~ "late checksum: #{10 * ?l}", output
  end
end
