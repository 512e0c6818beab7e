# Benchmark of Shmex.Native, against :binary.copy/1 measured in the same run.
#
#     mix run bench/shmex_bench.exs                      # the table
#     ERL_FLAGS="+S 1" mix run bench/shmex_bench.exs --fairness
#                                                        # normal scheduler held
#     mix run bench/shmex_bench.exs --queued             # dirty schedulers shared
#
# Each row is the median of several timed batches; state a call consumes
# (a segment to split, trim or append to) is made before its batch starts,
# outside the timing. Each batch is paired with a batch of :binary.copy/1 of
# the same size right before it, and the ratio column is the median of the
# pairs' ratios: machines are noisy, compare ratios within one run.
#
# Two lines come before the table: the C floor (the system calls Shmex makes
# for the small calls, in a C loop: bench/syscall_floor.c), and the least a
# NIF does for a 64-byte read or write (bench/least_nif.c: the struct's
# fields, one fstat, the copy, the reply, and none of Shmex's turns and
# checks). Between the second and Shmex's own rows is what those cost.

defmodule Shmex.Bench.Least do
  @moduledoc false
  # bench/least_nif.c, built and loaded by Shmex.Bench.least/0.
  def load(path), do: :erlang.load_nif(String.to_charlist(path), 0)
  def open(_name), do: :erlang.nif_error(:not_loaded)
  def read(_shm, _handle), do: :erlang.nif_error(:not_loaded)
  def write(_shm, _handle, _data), do: :erlang.nif_error(:not_loaded)
end

defmodule Shmex.Bench do
  alias Shmex.Native

  @sizes [64, 4096, 1_048_576, 16_777_216]
  @batches 7
  # Aim for batches of about this many nanoseconds.
  @batch_ns 30_000_000

  def main(["--fairness"]), do: fairness()
  def main(["--queued"]), do: queued_read()
  def main([]), do: table()

  def main(_args) do
    IO.puts("usage: mix run bench/shmex_bench.exs [--fairness | --queued]")
    System.halt(1)
  end

  defp table do
    IO.puts(machine())
    floor()
    least()
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

  # The same system calls in a C loop (bench/syscall_floor.c): what the
  # kernel alone costs here, for the small calls.
  defp floor do
    source = Path.join(__DIR__, "syscall_floor.c")
    binary = Path.join(System.tmp_dir!(), "shmex-floor-#{System.pid()}")

    with gcc when is_binary(gcc) <- System.find_executable("gcc"),
         {_, 0} <- System.cmd(gcc, ["-O2", source, "-o", binary], stderr_to_stdout: true),
         {output, 0} <- System.cmd(binary, []) do
      IO.puts(
        "C floor of the same system calls, ns: " <>
          String.replace(String.trim(output), "\n", ", ")
      )
    else
      _ -> IO.puts("C floor: not measured (no gcc)")
    end

    File.rm(binary)
  end

  # The least a NIF does for the small calls (bench/least_nif.c): the
  # struct's fields, one fstat, the copy and the reply, with nothing of
  # Shmex's turns and checks.
  defp least do
    source = Path.join(__DIR__, "least_nif.c")
    library = Path.join(System.tmp_dir!(), "shmex-least-#{System.pid()}")
    args = ~w(-std=c11 -O2 -fPIC -shared) ++ String.split(Shmex.Build.cflags(:nif))

    with gcc when is_binary(gcc) <- System.find_executable("gcc"),
         {_, 0} <-
           System.cmd(gcc, args ++ [source, "-o", library <> ".so"], stderr_to_stdout: true),
         :ok <- Shmex.Bench.Least.load(library) do
      data = :binary.copy(<<5>>, 64)
      shm = Shmex.new(data)
      handle = Shmex.Bench.Least.open(shm.name)
      read = median_ns(fn _ -> Shmex.Bench.Least.read(shm, handle) end)
      write = median_ns(fn _ -> Shmex.Bench.Least.write(shm, handle, data) end)

      IO.puts(
        "Least a NIF does (the struct's fields, fstat, copy, reply), ns: " <>
          "read 64 B #{round(read)}, write 64 B #{round(write)}"
      )
    else
      nil -> IO.puts("Least a NIF does: not measured (no gcc)")
      {output, status} -> IO.puts("Least a NIF does: not built (gcc #{status}):\n#{output}")
      {:error, reason} -> IO.puts("Least a NIF does: not loaded: #{inspect(reason)}")
    end

    File.rm(library <> ".so")
  end

  defp median_ns(call) do
    subject = {fn -> nil end, call}
    per_batch = batch_size(subject)
    median(for _ <- 1..@batches, do: time_batch(subject, per_batch))
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
  # baseline ns per call}, over @batches pairs of batches. The baseline is
  # timed in batches of its own size, after the segments the previous
  # batch made are collected and removed: timed in the subject's batch size
  # right after it, it was charged for that cleanup (`trim/2` of 64 B came
  # out at 1.34x a copy for a call ~100x as long).
  defp time_against(subject, baseline) do
    per_batch = batch_size(subject)
    base_per_batch = batch_size(baseline)

    pairs =
      for _ <- 1..@batches do
        settle()
        base = time_batch(baseline, base_per_batch)
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

  # How long each call holds the only normal scheduler (a 1 ms ticker's
  # worst wait, beside the machine's own noise), and how a read fares while
  # other calls queue for another segment.
  defp fairness do
    schedulers = :erlang.system_info(:schedulers_online)
    IO.puts(machine())

    IO.puts(
      "normal schedulers online: #{schedulers}#{if schedulers != 1, do: " (run with ERL_FLAGS=\"+S 1\")"}, " <>
        "dirty CPU schedulers: #{:erlang.system_info(:dirty_cpu_schedulers_online)}"
    )

    mib = 1_048_576
    big = :binary.copy(<<7>>, 256 * mib)
    busy = busy(Shmex.new(:binary.copy(<<3>>, 16 * mib)))
    written = busy(Shmex.new(big))
    sparse = Shmex.empty(256 * mib)
    one = Shmex.new("x")
    four = busy(Shmex.new(:binary.copy(<<4>>, 4 * mib)))
    four_data = :binary.copy(<<6>>, 4 * mib)
    long_name = %{one | name: :binary.copy("a", 64 * mib), guard: nil}

    cases = [
      {"nothing: `Process.sleep(300)`, the machine's own noise", fn -> Process.sleep(300) end},
      {"`read/1` of a busy 16 MiB segment", fn -> {:ok, _} = Native.read(busy) end},
      {"`append/2` of 1 byte onto a 256 MiB target without its guard",
       fn -> {:ok, _} = Native.append(%{written | guard: nil}, one) end},
      {"`append/2` of 1 byte onto a 256 MiB sparse target",
       fn -> {:ok, _} = Native.append(%{sparse | size: 256 * mib}, one) end},
      {"`read/2` with a 64 MiB name", fn -> {:error, _} = Native.read(long_name, 0) end},
      {"`write/2` of 4 MiB, 200 times in a loop (each fits a normal scheduler)",
       fn -> for _ <- 1..200, do: {:ok, _} = Native.write(four, four_data) end},
      {"`write/2` of 256 MiB", fn -> {:ok, _} = Native.write(written, big) end},
      {"`read/1` of 256 MiB", fn -> {:ok, _} = Native.read(%{written | size: 256 * mib}) end}
    ]

    IO.puts("")
    IO.puts("| call | took | worst gap of a 1 ms ticker | over the noise |")
    IO.puts("|---|---:|---:|---:|")

    Enum.reduce(cases, nil, fn {name, call}, noise ->
      # Each case once to warm up, then the worst of three; the garbage of
      # each run is collected before the next, outside the measurement.
      call.()

      {us, gap} =
        1..3
        |> Enum.map(fn _ ->
          :erlang.garbage_collect()
          with_ticker(fn -> call.() && :ok end)
        end)
        |> Enum.max_by(&elem(&1, 1))

      noise = noise || gap
      IO.puts("| #{name} | #{ms(us * 1000)} | #{ms(gap)} | #{ms(max(gap - noise, 0))} |")
      noise
    end)

    Enum.each([sparse, written, four], &Shmex.ensure_not_gc/1)
  end

  # A 64 MiB read of one segment, alone, then while a long write holds
  # another segment and five readers queue for it. Readers waiting in a lock
  # on the dirty schedulers would hold every one there is (one per core);
  # parked, they hold none.
  defp queued_read do
    mib = 1_048_576
    IO.puts(machine())
    IO.puts("dirty CPU schedulers: #{:erlang.system_info(:dirty_cpu_schedulers_online)}")
    mine = busy(Shmex.new(:binary.copy(<<1>>, 64 * mib)))
    theirs = busy(Shmex.new(:binary.copy(<<2>>, 64 * mib)))
    # Writing 2 GiB of fresh pages takes seconds: the queue lasts.
    huge = :binary.copy(<<5>>, 2048 * mib)
    alone = median_read_ms(mine)

    parent = self()
    writer = spawn(fn -> send(parent, {:written, Native.write(theirs, huge)}) end)
    Process.sleep(50)
    readers = for _ <- 1..5, do: spawn(fn -> Native.read(theirs) end)
    Process.sleep(50)
    queued = median_read_ms(mine)
    still_writing = Process.alive?(writer)
    receive do: ({:written, {:ok, _}} -> :ok)
    Enum.each(readers, &Process.exit(&1, :kill))

    IO.puts("")
    IO.puts("| 64 MiB `read/1` | median of 7 |")
    IO.puts("|---|---:|")
    IO.puts("| alone | #{:erlang.float_to_binary(alone, decimals: 2)} ms |")

    IO.puts(
      "| while a write holds another segment and five readers queue for it | " <>
        "#{:erlang.float_to_binary(queued, decimals: 2)} ms (#{:erlang.float_to_binary(queued / alone, decimals: 2)} × alone) |"
    )

    unless still_writing, do: IO.puts("(the write ended before the last read: rerun)")
  end

  defp median_read_ms(shm) do
    for _ <- 1..7 do
      :erlang.garbage_collect()
      :timer.tc(fn -> {:ok, _} = Native.read(shm) end) |> elem(0)
    end
    |> median()
    |> Kernel./(1000)
  end

  # Used often enough to be kept open and mapped.
  defp busy(shm) do
    for _ <- 1..4, do: {:ok, _} = Native.read(shm, 1)
    shm
  end

  # Runs `fun` while a process that wants to run every millisecond records
  # the longest it had to wait.
  defp with_ticker(fun) do
    parent = self()
    ticker = spawn(fn -> tick(parent, System.monotonic_time(:nanosecond), 0) end)
    receive do: (:ticking -> :ok)
    {us, _result} = :timer.tc(fun)
    send(ticker, :stop)
    gap = receive do: ({:worst_gap, gap} -> gap)
    {us, gap}
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
