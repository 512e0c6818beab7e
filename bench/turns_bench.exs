# Fairness figures of turns and dirty schedulers, on the VM this runs in:
#
#     ERL_FLAGS="+S 1" mix run bench/turns_bench.exs --turns
#     mix run bench/turns_bench.exs --steps
#
# (On this machine, in a private tmpfs: `unshare -m sh -c 'mount -t tmpfs
# -o size=2g tmpfs /dev/shm && ERL_FLAGS="+S 1" mix run bench/turns_bench.exs
# --turns'`.) `+S 1` gives one dirty CPU scheduler too: --steps is meant
# for the default two (one per core); it prints how many there are.
#
# --turns: one process writes a 16 MiB segment in a tight loop while another
# reads it 20 times. With turns first come, first served no read waits for
# more than the write ahead of it: each read takes at most about
# 3 × (read + write) alone.
#
# --steps: five processes read a 256 MiB segment three times each; a 64 MiB
# read of another segment, started meanwhile, waits for its share of the two
# dirty schedulers among six copies (3× on two): long copies go in steps of
# about a millisecond, each behind the work that queued meanwhile.

defmodule Shmex.TurnsBench do
  alias Shmex.Native

  @mib 1_048_576

  def main(["--turns"]), do: turns()
  def main(["--steps"]), do: steps()

  def main(_args) do
    IO.puts("usage: mix run bench/turns_bench.exs --turns | --steps")
    System.halt(1)
  end

  defp turns do
    shm = busy(Shmex.new(:binary.copy(<<1>>, 16 * @mib)))
    data = :binary.copy(<<2>>, 16 * @mib)
    read_alone = median(for _ <- 1..9, do: ms(fn -> {:ok, _} = Native.read(shm) end))
    write_alone = median(for _ <- 1..9, do: ms(fn -> {:ok, _} = Native.write(shm, data) end))

    writer = spawn(fn -> write_forever(shm, data) end)
    Process.sleep(20)
    reads = for _ <- 1..20, do: ms(fn -> {:ok, _} = Native.read(shm) end)
    Process.exit(writer, :kill)

    bound = 3 * (read_alone + write_alone)
    IO.puts("16 MiB read alone #{f(read_alone)} ms, write alone #{f(write_alone)} ms")
    IO.puts("reads beside the writer, ms: #{reads |> Enum.sort() |> Enum.map_join(" ", &f/1)}")

    IO.puts(
      "20 reads beside a writer in a loop: median #{f(median(reads))} ms, " <>
        "worst #{f(Enum.max(reads))} ms; bound 3 × (read + write) = #{f(bound)} ms: " <>
        if(Enum.max(reads) <= bound, do: "within", else: "OVER")
    )
  end

  defp write_forever(shm, data) do
    {:ok, _} = Native.write(shm, data)
    write_forever(shm, data)
  end

  defp steps do
    big = busy(Shmex.new(:binary.copy(<<3>>, 256 * @mib)))
    mine = busy(Shmex.new(:binary.copy(<<4>>, 64 * @mib)))
    alone = median(for _ <- 1..7, do: ms(fn -> {:ok, _} = Native.read(mine) end))

    parent = self()

    readers =
      for _ <- 1..5 do
        spawn(fn ->
          for _ <- 1..3, do: {:ok, _} = Native.read(big)
          send(parent, :read)
        end)
      end

    Process.sleep(30)
    queued = ms(fn -> {:ok, _} = Native.read(mine) end)
    still_reading = Enum.count(readers, &Process.alive?/1)
    for _ <- readers, do: receive(do: (:read -> :ok))

    IO.puts(
      "#{:erlang.system_info(:dirty_cpu_schedulers_online)} dirty CPU schedulers; " <>
        "64 MiB read alone #{f(alone)} ms; while five processes read 256 MiB " <>
        "three times each: #{f(queued)} ms (#{f(queued / alone)} × alone; bound 5 ×: " <>
        if(queued <= 5 * alone, do: "within", else: "OVER") <>
        ")" <> if(still_reading < 5, do: " (some readers had ended: rerun)", else: "")
    )
  end

  # Used often enough to be kept open and mapped.
  defp busy(shm) do
    for _ <- 1..4, do: {:ok, _} = Native.read(shm, 1)
    shm
  end

  defp ms(fun) do
    :erlang.garbage_collect()
    {us, _} = :timer.tc(fun)
    us / 1000
  end

  defp median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))
  defp f(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
end

Shmex.TurnsBench.main(System.argv())
