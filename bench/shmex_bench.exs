# Benchmark of Shmex.Native, against :binary.copy/1 measured in the same run.
#
#     mix run bench/shmex_bench.exs                      # the table
#     ERL_FLAGS="+S 1" mix run bench/shmex_bench.exs --ticker
#                                                        # scheduler blocking
#
# Each row is the median of several timed batches; state a call consumes
# (a segment to split, trim or append to) is made before its batch starts,
# outside the timing. Each batch is paired with a batch of :binary.copy/1 of
# the same size right before it, and the ratio column is the median of the
# pairs' ratios: machines are noisy, compare ratios within one run.

defmodule Shmex.Bench do
  alias Shmex.Native

  @sizes [64, 4096, 1_048_576, 16_777_216]
  @batches 7
  # Aim for batches of about this many nanoseconds.
  @batch_ns 30_000_000

  def main(["--ticker"]), do: ticker()
  def main([]), do: table()

  def main(_args) do
    IO.puts("usage: mix run bench/shmex_bench.exs [--ticker]")
    System.halt(1)
  end

  defp table do
    IO.puts(machine())
    IO.puts("")
    IO.puts("| call | size | ns per call | MB/s | × :binary.copy/1 |")
    IO.puts("|---|---:|---:|---:|---:|")

    for size <- @sizes do
      data = :rand.bytes(size)
      copy = {fn -> data end, &:binary.copy/1}

      copy_ns =
        for {name, setup, call} <- calls(size, data) do
          settle()
          {ns, ratio, copy_ns} = time_against({setup, call}, copy)

          IO.puts(
            "| #{name} | #{human(size)} | #{round(ns)} | #{mb_per_s(size, ns)} | #{ratio} |"
          )

          copy_ns
        end
        |> median()

      IO.puts(
        "| `:binary.copy/1` | #{human(size)} | #{round(copy_ns)} | #{mb_per_s(size, copy_ns)} | 1.00 |"
      )
    end
  end

  defp calls(size, data) do
    half = div(size, 2)
    written = Shmex.new(data)
    blank = Shmex.empty(size)

    [
      {"`allocate/1`", fn -> %Shmex{capacity: size} end, &Native.allocate/1},
      {"`write/2`", fn -> blank end, &Native.write(&1, data)},
      {"`read/1`", fn -> written end, &Native.read/1},
      {"`Shmex.new/1 \\|> to_binary/1`", fn -> data end,
       &(&1 |> Shmex.new() |> Shmex.to_binary())},
      {"`split_at/2` (half)", fn -> written end, &Native.split_at(&1, half)},
      {"`append/2` (half + half)",
       fn ->
         {Shmex.new(binary_part(data, 0, half)), Shmex.new(binary_part(data, half, size - half))}
       end, fn {a, b} -> Native.append(a, b) end},
      {"`trim/2` (half)", fn -> Shmex.new(data) end, &Native.trim(&1, half)}
    ]
  end

  # {median ns per call, median ratio to the paired baseline batch, median
  # baseline ns per call}, over @batches pairs of batches.
  defp time_against(subject, baseline) do
    per_batch = batch_size(subject)

    pairs =
      for _ <- 1..@batches do
        base = time_batch(baseline, per_batch)
        ns = time_batch(subject, per_batch)
        {ns, ns / base, base}
      end

    {median(Enum.map(pairs, &elem(&1, 0))),
     :erlang.float_to_binary(median(Enum.map(pairs, &elem(&1, 1))), decimals: 2),
     median(Enum.map(pairs, &elem(&1, 2)))}
  end

  defp batch_size({setup, call}) do
    warm = setup.()
    {warm_us, _} = :timer.tc(fn -> call.(warm) end)
    max(1, min(20_000, div(@batch_ns, max(warm_us * 1000, 1))))
  end

  # Nanoseconds per call over one batch.
  defp time_batch({setup, call}, per_batch) do
    inputs = for _ <- 1..per_batch, do: setup.()
    :erlang.garbage_collect()
    start = System.monotonic_time(:nanosecond)
    Enum.each(inputs, call)
    (System.monotonic_time(:nanosecond) - start) / per_batch
  end

  # Waits until the segments collected so far are removed: the background
  # thread removing them would otherwise compete with the next row for CPU.
  defp settle do
    :erlang.garbage_collect()

    case Shmex.Native.Nif.stats() do
      %{background_jobs: 0} -> :ok
      _ -> Process.sleep(10) && settle()
    end
  end

  defp median(values), do: values |> Enum.sort() |> Enum.at(div(length(values), 2))

  defp ticker do
    schedulers = :erlang.system_info(:schedulers_online)
    IO.puts(machine())

    IO.puts(
      "normal schedulers online: #{schedulers}#{if schedulers != 1, do: " (run with ERL_FLAGS=\"+S 1\")"}"
    )

    data = :binary.copy(<<7>>, 256 * 1_048_576)
    shm = Shmex.empty(byte_size(data))
    # Write it a few times first: the rows compare scheduling, not page
    # allocation, nor the system calls a segment is copied with until it has
    # been used often enough to be worth a mapping.
    for _ <- 1..3, do: {:ok, _} = Native.write(shm, data)

    IO.puts("")
    IO.puts("| 256 MiB call | took | worst gap of a 1 ms ticker |")
    IO.puts("|---|---:|---:|")

    for {name, call} <- [
          {"nothing: `Process.sleep(300)`, for the machine's own noise",
           fn _ -> {:ok, Process.sleep(300)} end},
          {"`write/2`", &Native.write(&1, data)},
          {"`read/1`", &Native.read/1}
        ] do
      {us, result, gap} = with_ticker(fn -> call.(%{shm | size: byte_size(data)}) end)
      {:ok, _} = result
      IO.puts("| #{name} | #{ms(us * 1000)} | #{ms(gap)} |")
    end
  end

  # Runs `fun` while a process that wants to run every millisecond records
  # the longest it had to wait.
  defp with_ticker(fun) do
    parent = self()
    ticker = spawn(fn -> tick(parent, System.monotonic_time(:nanosecond), 0) end)
    receive do: (:ticking -> :ok)
    {us, result} = :timer.tc(fun)
    send(ticker, :stop)
    gap = receive do: ({:worst_gap, gap} -> gap)
    {us, result, gap}
  end

  defp tick(parent, last, worst) do
    if worst == 0, do: send(parent, :ticking)

    receive do
      :stop -> send(parent, {:worst_gap, worst})
    after
      1 ->
        now = System.monotonic_time(:nanosecond)
        tick(parent, now, max(worst, max(now - last, 1)))
    end
  end

  defp machine do
    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, info} -> info |> String.split("\n") |> Enum.find_value("?", &model_name/1)
        _ -> "?"
      end

    "#{cpu}, #{:erlang.system_info(:logical_processors_online)} cores, " <>
      "OTP #{:erlang.system_info(:otp_release)}, Elixir #{System.version()}"
  end

  defp model_name("model name" <> rest),
    do: rest |> String.trim_leading() |> String.trim_leading(":") |> String.trim()

  defp model_name(_line), do: nil

  defp human(size) when size >= 1_048_576, do: "#{div(size, 1_048_576)} MiB"
  defp human(size) when size >= 1024, do: "#{div(size, 1024)} KiB"
  defp human(size), do: "#{size} B"

  defp mb_per_s(size, ns), do: round(size / ns * 1000)
  defp ms(ns), do: "#{:erlang.float_to_binary(ns / 1_000_000, decimals: 2)} ms"
end

Shmex.Bench.main(System.argv())
