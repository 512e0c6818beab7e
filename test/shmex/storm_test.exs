defmodule Shmex.StormTest do
  # Shared memory is shared: other OS processes and other handles can
  # shrink, truncate or hole-punch a segment while a call copies through a
  # mapping of it. Each storm runs in a BEAM of its own for 5 seconds: every
  # kind of call (the six of Shmex.Native that copy, a C NIF on the C API, a
  # Rust NIF on the crate) hammers a segment of its own meanwhile. The VM
  # must live, every call must return a result of its documented shape, and
  # the VM must exit normally.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Test.Beam

  @moduletag :storm
  @moduletag timeout: 300_000
  @seconds 5

  @kinds ~w(read write split_at append_target append_source trim set_capacity c_api rust_api)

  defp storm!(scenario, opts \\ []) do
    code = "Shmex.Test.Storm.run(#{inspect(scenario)}, #{@seconds})"
    {output, status} = Beam.run(code, opts)
    assert status == 0, output
    assert output =~ "storm over", output
    refute output =~ ":bad", output

    for kind <- @kinds do
      assert output =~ ~r/^#{kind}: %\{.+\}$/m, "#{kind} made no call:\n#{output}"
    end

    [faults] = Regex.run(~r/faults absorbed: (\d+)/, output, capture: :all_but_first)
    Process.put(:storm_output, output)
    String.to_integer(faults)
  end

  # How many of the C NIF's calls of the last storm reported a fault.
  defp c_api_faults do
    case Regex.run(~r/^c_api: .*invalid_payload\} => (\d+)/m, Process.get(:storm_output),
           capture: :all_but_first
         ) do
      [count] -> String.to_integer(count)
      nil -> 0
    end
  end

  @host_storm Shmex.Test.Space.lacking(64 <<< 20, "a storm on the host's /dev/shm")

  @tag skip: @host_storm
  test "other handles in this VM shrink and regrow the segments" do
    # Calls of Shmex.Native through any handle take turns: nothing of theirs
    # faults. The C NIF reads the mapping it was handed between its calls,
    # outside any turn, and its faults, absorbed by the VM's one handler, are
    # the only ones; each is reported to it. The Rust NIF's calls go through
    # the VM's primary and take turns as Elixir's do: its closures run in
    # their call's turn, and fault no more than Elixir's calls.
    faults = storm!(:vm_handles)
    assert faults <= c_api_faults()
  end

  @tag skip: @host_storm
  test "another OS process truncates the segments to 0 and back" do
    assert storm!(:os_truncate) > 0
  end

  test "a SIGBUS outside every library's mappings still ends the VM, as without them" do
    # The NIF, the C library and the Rust NIF each install a handler: they
    # chain, and a fault none of them owns reaches the default action.
    code = ~S"""
    Shmex.Test.Beam.load_natives()
    shm = Shmex.new(:binary.copy("x", 100_000))
    for _ <- 1..4, do: {:ok, _} = Shmex.Native.read(shm)
    {:ok, _} = ShmexCClient.Nif.checksum(shm)
    _ = ShmexExample.Nif.checksum(shm)
    IO.puts("handlers installed")
    # Let the output out before the VM dies.
    Process.sleep(500)
    ShmexCClient.Nif.unguarded_sigbus()
    IO.puts("survived")
    """

    {output, status} = Beam.run(code)
    assert output =~ "handlers installed"
    refute output =~ "survived"
    # Killed by SIGBUS (7).
    assert status == 128 + 7, output
  end

  describe "on a /dev/shm of its own" do
    if reason = Beam.private_shm_unavailable() do
      IO.puts("skipping the storms that fill /dev/shm: #{reason}")
      @describetag skip: reason
    end

    test "another OS process punches holes and keeps /dev/shm full" do
      storm!(:os_punch_and_fill, shm_megabytes: 64)
    end

    test "with no race: a segment loses its pages behind its guard, /dev/shm fills, calls are made" do
      {output, status} =
        Beam.run("Shmex.Test.Storm.lost_pages_on_a_full_shm()", shm_megabytes: 16)

      assert status == 0, output
      assert output =~ "write: {:error, {:enospc, :ftruncate}}"
      # The holes read as zeros, without taking a page.
      assert output =~ "read: {:ok, 4194304, [0]}"
      assert output =~ "c_api: {:error, {:enospc, :ftruncate}}"
      assert output =~ ~r/rust_api: \{:error, (:invalid_payload|\{:enospc, :ftruncate\})\}/
      assert output =~ "alive"
    end
  end
end
