# The C path every unifex native takes, measured beside the same system
# calls by name in C (bench/payload_nif.c), in one run:
#
#     mix run bench/c_path_bench.exs
#
# Two NIF libraries built from payload_nif.c sit in one VM beside the Shmex
# NIF, as two Membrane plugins would. Each row is the median of several
# batches. "× floor" compares with the by-name C loop of the same kind.
# Allocation has a second row beside it: the same system calls by name,
# each payload handed to Elixir as a %Shmex{} whose guard unlinks when
# collected. That is the least a NIF library giving C-made payloads to
# Elixir does, without any of Shmex's checks; what is above the C loop
# there is the VM's own work (terms, resources, collecting them, running
# their destructors).

# Two NIF libraries built from one source, as two plugins would be.
for module <- [Shmex.Bench.PayloadA, Shmex.Bench.PayloadB] do
  defmodule module do
    @moduledoc false
    def load(path), do: :erlang.load_nif(String.to_charlist(path), 0)
    def touch(_shm, _n), do: :erlang.nif_error(:not_loaded)
    def allocate(_size, _n), do: :erlang.nif_error(:not_loaded)
    def floor_touch(_name, _n), do: :erlang.nif_error(:not_loaded)
    def floor_allocate(_size, _n), do: :erlang.nif_error(:not_loaded)
    def floor_allocate_terms(_size, _n), do: :erlang.nif_error(:not_loaded)
  end
end

defmodule Shmex.Bench.CPath do
  alias Shmex.Bench.{PayloadA, PayloadB}

  @sizes [64, 4096, 1_048_576]
  @batches 7

  def main do
    build!(PayloadA)
    build!(PayloadB)
    # The Shmex NIF is the VM's primary: loaded first, as in any Membrane app.
    Shmex.new("x")

    IO.puts("| per payload | size | ns | by-name floor, ns | × floor |")
    IO.puts("|---|---:|---:|---:|---:|")

    for size <- @sizes do
      data = :binary.copy(<<7>>, size)
      elixir_made = Shmex.new(data)
      [c_made] = PayloadA.allocate(size, 1)
      floor = median(fn -> PayloadA.floor_touch(elixir_made.name, 2000) end)

      row(
        "touch (made by Elixir)",
        size,
        median(fn -> PayloadB.touch(elixir_made, 2000) end),
        floor
      )

      row(
        "touch (made by another C library)",
        size,
        median(fn -> PayloadB.touch(c_made, 2000) end),
        floor
      )
    end

    # As a pipeline allocates: a few payloads in flight at a time, each
    # batch collected before the next.
    in_flight = 10
    rounds = 100

    for size <- [64, 4096] do
      floor = median(fn -> PayloadA.floor_allocate(size, in_flight * rounds) end)
      ours = median(fn -> collected(&PayloadA.allocate/2, size, in_flight, rounds) end)

      least =
        median(fn -> collected(&PayloadA.floor_allocate_terms/2, size, in_flight, rounds) end)

      row("allocate + fill from C, then collected", size, ours, floor)
      row("the same calls by name, as %Shmex{} terms, then collected", size, least, floor)
    end
  end

  # ns per payload of `allocate` making `in_flight` payloads `rounds` times,
  # each batch collected before the next.
  defp collected(allocate, size, in_flight, rounds) do
    {time, :ok} =
      :timer.tc(fn ->
        for _ <- 1..rounds do
          drop(allocate.(size, in_flight))
          :erlang.garbage_collect()
        end

        :ok
      end)

    time * 1000 / (in_flight * rounds)
  end

  defp drop(_payloads), do: :ok

  defp row(what, size, ns, floor) do
    IO.puts(
      "| #{what} | #{human(size)} | #{round(ns)} | #{round(floor)} | #{Float.round(ns / floor, 2)} |"
    )
  end

  defp median(fun) do
    fun.()
    times = for _ <- 1..@batches, do: fun.()
    Enum.at(Enum.sort(times), div(@batches, 2))
  end

  defp build!(module) do
    source = Path.join(__DIR__, "payload_nif.c")
    name = module |> Module.split() |> List.last()
    output = Path.join(System.tmp_dir!(), "shmex-#{name}-#{System.pid()}.so")

    args =
      ~w(-std=c11 -O2 -fPIC -shared -DMODULE=#{module}) ++
        String.split(Shmex.Build.cflags(:nif)) ++
        [source, "-o", output] ++ String.split(Shmex.Build.ldflags(:nif))

    case System.cmd("gcc", args, stderr_to_stdout: true) do
      {_, 0} -> :ok = module.load(Path.rootname(output))
      {out, _} -> raise "building #{source} failed:\n#{out}"
    end
  end

  defp human(size) when size >= 1_048_576, do: "#{div(size, 1_048_576)} MiB"
  defp human(size) when size >= 1024, do: "#{div(size, 1024)} KiB"
  defp human(size), do: "#{size} B"
end

Shmex.Bench.CPath.main()
