defmodule Shmex.HelpingTest do
  # A C call that waits for its turn blocks its scheduler thread; a long
  # Elixir copy goes on in steps on the dirty CPU schedulers, holding the
  # segment's turn between them. Blocked calls on every dirty scheduler would
  # keep the copy from its next step for ever: a waiting call runs the rest
  # of the copy itself. Each test runs in a VM of its own with two dirty CPU
  # schedulers, which two dirty C calls (the C client's checksum) fill.
  use ExUnit.Case, async: true

  import Bitwise

  @len 256 <<< 20

  # The code of the other VM: `start` binds `data` (#{@len} bytes of 7) and
  # starts a copy in steps, which sends `{:copied, result}` when done, and
  # parks a read of ours behind it (so that the checksums queue behind the
  # copy), binding `checked` to the struct to checksum after the copy. It
  # prints what the copy and the checksums came to, or which did not finish
  # within 30 s.
  defp code(start, checker) do
    """
    import Bitwise
    Shmex.Test.Beam.load_natives()
    IO.puts("dirty CPU schedulers: \#{:erlang.system_info(:dirty_cpu_schedulers_online)}")
    len = #{@len}
    data = :binary.copy(<<7>>, len)
    me = self()
    # Reads `shm` until one waits behind the copy; `:missed` if the copy
    # ended first.
    park = fn park, shm ->
      receive do
        {:copied, _} = copied -> send(me, copied) && :missed
      after
        0 ->
          case Shmex.Native.Nif.read(shm, 1) do
            {:wait, _} = parked -> parked
            {:ok, _} -> park.(park, shm)
          end
      end
    end
    #{start}
    tasks = for _ <- 1..2, do: Task.async(fn -> #{checker}.checksum(checked) end)
    deadline = System.monotonic_time(:millisecond) + 30_000
    left = fn -> max(deadline - System.monotonic_time(:millisecond), 0) end
    copied = receive do {:copied, copied} -> copied after left.() -> :not_finished end
    case copied do
      {:ok, %Shmex{size: size}} -> IO.puts("copy: ok, size \#{size}")
      other -> IO.inspect(other, label: "copy")
    end
    for task <- tasks do
      IO.inspect(Task.yield(task, left.()) || :not_finished, label: "checksum")
    end
    """
  end

  defp run(start, size, sum, dirty \\ 2, checker \\ :c) do
    # No more dirty CPU schedulers than normal ones can be had.
    erl = "+S #{dirty}:#{dirty} +SDcpu #{dirty}:#{dirty}"
    module = if checker == :c, do: "ShmexCClient.Nif", else: "ShmexExample.Nif"
    {output, status} = Shmex.Test.Beam.run(code(start, module), erl: erl, timeout: 120_000)
    assert status == 0, output
    assert output =~ "dirty CPU schedulers: #{dirty}", output
    assert output =~ "copy: ok, size #{size}\n", output
    sums = Regex.scan(~r/checksum: (.*)/, output, capture: :all_but_first)
    # The C client answers `{:ok, sum}`, the Rust example the sum.
    answer = if checker == :c, do: "{:ok, {:ok, #{sum}}}", else: "{:ok, #{sum}}"
    assert sums == List.duplicate([answer], 2), output
  end

  @write """
  checked = %{Shmex.empty(len) | size: len}
  spawn_link(fn -> send(me, {:copied, Shmex.Native.write(checked, data)}) end)
  {:wait, _} = park.(park, checked)
  """

  @tag :beam
  @tag skip: Shmex.Test.Space.lacking(2 * @len, "a 256 MiB write in another VM")
  test "C calls filling the dirty schedulers finish the stepped write they wait behind" do
    run(@write, @len, 7 * @len)
  end

  # A third dirty scheduler is free for the write's next step while a C
  # call finishes it: the step waits for it, and replies with what it made.
  @tag :beam
  @tag skip: Shmex.Test.Space.lacking(2 * @len, "a 256 MiB write in another VM")
  test "a copy finished by a C call while its next step comes up replies all the same" do
    run(@write, @len, 7 * @len, 3)
  end

  # The Rust API works through the VM's primary, and waits as C does.
  @tag :beam
  @tag skip: Shmex.Test.Space.lacking(2 * @len, "a 256 MiB write in another VM")
  test "Rust NIF calls filling the dirty schedulers finish the stepped write they wait behind" do
    run(@write, @len, 7 * @len, 2, :rust)
  end

  @tag :beam
  @tag skip: Shmex.Test.Space.lacking(3 * @len, "a 256 MiB append in another VM")
  test "C calls filling the dirty schedulers finish the stepped append they wait behind" do
    start = """
    {target, source} = {Shmex.new(<<1, 2, 3>>), Shmex.new(data)}
    spawn_link(fn -> send(me, {:copied, Shmex.Native.append(target, source)}) end)
    {:wait, _} = park.(park, target)
    checked = %{target | size: len + 3, capacity: len + 3}
    """

    run(start, @len + 3, 6 + 7 * @len)
  end

  @tag :beam
  @tag skip: Shmex.Test.Space.lacking(2 * @len, "a 256 MiB trim in another VM")
  test "C calls filling the dirty schedulers finish the stepped trim they wait behind" do
    start = """
    shm = Shmex.new(<<1, 2, 3>> <> data)
    spawn_link(fn -> send(me, {:copied, Shmex.Native.trim(shm, 3)}) end)
    {:wait, _} = park.(park, shm)
    checked = %{shm | size: len, capacity: len}
    """

    run(start, @len, 7 * @len)
  end
end
