defmodule PayloadsTest do
  # A unifex native built by bundlex against this Shmex, the way Membrane's
  # plugins are: payload arguments and results, as a NIF and as a C node.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native

  defp sum(data), do: data |> :binary.bin_to_list() |> Enum.sum()

  test "a %Shmex{} made in Elixir goes through the NIF and comes back a %Shmex{} with the right bytes" do
    data = :rand.bytes(100_000)
    shm = Shmex.new(data)
    assert Payloads.checksum(shm) == {:ok, sum(data)}
    assert {:ok, %Shmex{} = reversed} = Payloads.reversed(shm)

    assert Native.read(reversed) ==
             {:ok, data |> :binary.bin_to_list() |> Enum.reverse() |> :binary.list_to_bin()}
  end

  test "binaries stay binaries" do
    assert Payloads.checksum("abc") == {:ok, ?a + ?b + ?c}
    assert Payloads.reversed("abc") == {:ok, "cba"}
    assert Payloads.allocate(3, ?z, false) == {:ok, "zzz"}
  end

  test "a payload allocated in C works with every Shmex.Native function" do
    assert {:ok, %Shmex{size: 1000, capacity: 1000} = shm} = Payloads.allocate(1000, ?p, true)
    assert is_reference(shm.guard)
    assert Native.read(shm) == {:ok, String.duplicate("p", 1000)}
    assert {:ok, written} = Native.write(shm, "hello")
    assert {:ok, {left, right}} = Native.split_at(written, 2)
    assert Native.read(right) == {:ok, "llo"}
    assert {:ok, joined} = Native.append(left, right)
    assert Native.read(joined) == {:ok, "hello"}
    assert {:ok, trimmed} = Native.trim(joined, 1)
    assert Native.read(trimmed) == {:ok, "ello"}
    assert {:ok, resized} = Native.set_capacity(trimmed, 2)
    assert Native.read(resized) == {:ok, "el"}
    # Its guard is unifex's own resource type, and a live guard of this VM:
    # it is guarded already. A copy without it may get a second guard.
    assert Native.add_guard(shm) == {:error, :already_guarded}
    assert {:ok, _} = Native.add_guard(%{shm | guard: nil})
  end

  test "unifex_payload_realloc grows and shrinks shared memory" do
    assert {:ok, shm} = Payloads.allocate(3, ?a, true)
    assert {:ok, grown} = Payloads.regrown(shm, 6)
    assert Native.read(grown) == {:ok, "aaa" <> <<0, 0, 0>>}
    assert {:ok, shrunk} = Payloads.regrown(shm, 2)
    assert Native.read(shrunk) == {:ok, "aa"}
  end

  test "the guard of a payload allocated in C unlinks its segment once its owner is gone" do
    owner =
      spawn(fn ->
        {:ok, shm} = Payloads.allocate(10, 0, true)
        send(:payloads_test, {:name, shm.name})
        receive do: (:stop -> :ok)
      end)

    Process.register(self(), :payloads_test)
    assert_receive {:name, "/" <> name}
    path = Path.join("/dev/shm", name)
    assert File.exists?(path)
    ref = Process.monitor(owner)
    send(owner, :stop)
    assert_receive {:DOWN, ^ref, :process, _, _}
    refute File.exists?(path)
  end

  test "a forged or missing struct is an error or garbage, never a crash" do
    shm = Shmex.new("abc")
    # unifex maps what the struct claims without checking the result: Shmex
    # gives it zeroed memory rather than an address that would crash it.
    assert Payloads.checksum(%{shm | size: 1 <<< 20, capacity: 1 <<< 20}) == {:ok, 0}
    assert Payloads.checksum(%{shm | name: "/no-such-segment-#{System.pid()}"}) == {:ok, 0}
    assert Native.read(shm) == {:ok, "abc"}
  end

  test "Shmex's NIF and the unifex NIF in one VM do not interfere" do
    for _ <- 1..200 do
      data = :rand.bytes(:rand.uniform(5000))
      shm = Shmex.new(data)
      assert Payloads.checksum(shm) == {:ok, sum(data)}
      assert {:ok, reversed} = Payloads.reversed(shm)

      assert Native.read(reversed) ==
               {:ok, data |> :binary.bin_to_list() |> Enum.reverse() |> :binary.list_to_bin()}
    end
  end

  test "8 processes make round trips at once" do
    results =
      1..8
      |> Task.async_stream(
        fn seed ->
          :rand.seed(:exsss, {seed, seed, seed})

          for _ <- 1..100 do
            data = :rand.bytes(:rand.uniform(20_000))
            {:ok, shm} = Payloads.reversed(Shmex.new(data))
            {:ok, back} = Payloads.reversed(shm)
            Native.read(back) == {:ok, data} and Payloads.checksum(back) == {:ok, sum(data)}
          end
        end,
        max_concurrency: 8
      )
      |> Enum.flat_map(fn {:ok, checks} -> checks end)

    assert Enum.all?(results)
  end

  test "the C node built from the same spec works" do
    require Unifex.CNode
    assert {:ok, cnode} = Unifex.CNode.start_link(:payloads)
    assert Unifex.CNode.call(cnode, :checksum, ["abc"]) == {:ok, ?a + ?b + ?c}
    assert Unifex.CNode.call(cnode, :reversed, ["abc"]) == {:ok, "cba"}
    assert Unifex.CNode.call(cnode, :allocate, [4, ?q, false]) == {:ok, "qqqq"}
    Unifex.CNode.stop(cnode)
  end
end
