defmodule Shmex.CNodeTest do
  # A C node built on the C-node API (test/support/c_node): %Shmex{} structs
  # go to it in messages and come back, as a Membrane C node's would.
  use ExUnit.Case, async: false

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.{NativeBuild, Segments}

  setup_all do
    executable = NativeBuild.gcc_cnode!(Path.expand("../support/c_node/shmex_cnode.c", __DIR__))
    ensure_distributed!()
    Process.register(self(), :shmex_cnode_test)
    name = "shmex_cnode_#{System.pid()}"

    port =
      Port.open({:spawn_executable, executable}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: [name, Atom.to_string(Node.get_cookie()), Atom.to_string(node())]
      ])

    cnode =
      receive do
        {:hello, pid} -> pid
      after
        10_000 -> flunk("the C node did not connect")
      end

    Process.unregister(:shmex_cnode_test)
    on_exit(fn -> send(cnode, :stop) end)
    %{cnode: cnode, port: port}
  end

  defp ensure_distributed! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      {:ok, _} = Node.start(:"shmex_test_#{System.pid()}", :shortnames)
    end
  end

  defp call(cnode, request) do
    send(cnode, {self(), request})

    receive do
      {:reply, reply} -> reply
    after
      10_000 -> flunk("no reply to #{inspect(request)}")
    end
  end

  test "reads a struct made here through a mapping", %{cnode: cnode} do
    data = :rand.bytes(50_000)
    assert call(cnode, {:checksum, Shmex.new(data)}) == {:ok, Enum.sum(:binary.bin_to_list(data))}
  end

  test "writes in place what this VM then reads", %{cnode: cnode} do
    shm = Shmex.new("abcdef")
    assert {:ok, %Shmex{name: name, size: 6}} = call(cnode, {:fill, shm, ?z})
    assert name == shm.name
    assert Native.read(shm) == {:ok, "zzzzzz"}
  end

  test "a struct round-trips whole", %{cnode: cnode} do
    shm = Shmex.new("round trip", 100)
    assert {:ok, echoed} = call(cnode, {:echo, shm})
    assert {echoed.name, echoed.size, echoed.capacity} == {shm.name, 10, 100}
    assert is_reference(echoed.guard)
    assert call(cnode, {:echo, %Shmex{}}) == {:ok, %Shmex{}}
  end

  test "makes segments this VM guards and collects", %{cnode: cnode} do
    name =
      Segments.in_process(fn ->
        assert {:ok, %Shmex{name: "/shmex-" <> _, guard: nil, capacity: 64} = made} =
                 call(cnode, {:make, 64})

        assert {:ok, guarded} = Native.add_guard(made)
        assert {:ok, written} = Native.write(guarded, "from the C node's segment")
        assert Native.read(written) == {:ok, "from the C node's segment"}
        made.name
      end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end

  test "terms that are not exactly a %Shmex{} struct are refused, not crashed on", %{cnode: cnode} do
    shm = Shmex.new("x")

    for term <- [
          :not_a_map,
          Map.delete(shm, :guard),
          Map.put(shm, :extra, 1),
          %{shm | name: "/a\0b"},
          %{shm | name: :atom},
          %{shm | size: -1},
          %{shm | capacity: 1 <<< 40},
          %{shm | guard: "not a reference"},
          Map.put(Map.delete(shm, :__struct__), :__struct__, Other),
          %{shm | name: String.duplicate("n", 10_000)}
        ] do
      reply = call(cnode, {:echo, term})
      assert {term, reply} == {term, {:error, :not_a_shmex}} or long_name?(term, reply)
    end

    assert call(cnode, {:checksum, %{shm | capacity: 1 <<< 20}}) == {:error, :invalid_payload}
  end

  # Names of any length are copied whole (0.5.1 overflowed a buffer).
  defp long_name?(%{name: name}, {:ok, %Shmex{name: name}}) when byte_size(name) > 255, do: true
  defp long_name?(_term, _reply), do: false
end
