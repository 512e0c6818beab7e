defmodule Shmex.Test.Hostile do
  @moduledoc false
  # Random terms for fuzzing, biased towards what a NIF must tell apart:
  # near-miss structs, boundary integers, wrong types. Uses the process's
  # :rand state, so a seed replays a run.

  import Bitwise

  @doc "Seeds this process's :rand state."
  def seed(seed), do: :rand.seed(:exsss, {seed, seed >>> 16, 0x5EED})

  @doc """
  A random argument of the given kind (`:shm`, `:count` or `:data`): usually
  one of that kind, valid or nearly so, sometimes any term at all. `segments`
  are real structs to pick or mutate.
  """
  def arg(:shm, segments) do
    case :rand.uniform(20) do
      n when n <= 10 -> Enum.random(segments)
      n when n <= 15 -> mutated(segments, 2)
      n when n <= 18 -> near_struct(segments, 2)
      _ -> term(segments)
    end
  end

  def arg(:count, segments), do: if(:rand.uniform(10) <= 7, do: integer(), else: term(segments))
  def arg(:data, segments), do: if(:rand.uniform(10) <= 7, do: binary(), else: term(segments))

  @doc "A random term; `segments` are real structs to mutate."
  def term(segments, depth \\ 2) do
    case :rand.uniform(12) do
      1 -> integer()
      2 -> Enum.random([1.0, -0.0, 3.5e300, :math.pi()])
      3 -> Enum.random([nil, true, false, :ok, :name, :"Elixir.Shmex", :""])
      4 -> binary()
      5 -> container(segments, depth)
      6 -> Enum.random([self(), make_ref(), :atomics.new(1, []), &Kernel.+/2, 1..2])
      7 -> Enum.random([%URI{}, MapSet.new([1]), %ArgumentError{}, Date.utc_today()])
      8 -> near_struct(segments, depth)
      9 -> near_struct(segments, depth)
      _ -> mutated(segments, depth)
    end
  end

  @doc """
  An integer, mostly a plausible byte count. Sizes between 2^20 and 2^44 are
  left out on purpose: a struct may legitimately claim them, and honouring
  such a claim reserves that much real memory on this machine.
  """
  def integer do
    case :rand.uniform(4) do
      1 -> :rand.uniform(20_000) - 1
      2 -> Enum.random([0, 1, 2, 3, 4096, 10_000])
      3 -> Enum.random([-1, -(1 <<< 70), 1 <<< 50, (1 <<< 63) - 1, 1 <<< 63])
      _ -> Enum.random([(1 <<< 64) - 1, 1 <<< 64, 1 <<< 100])
    end
  end

  defp binary do
    case :rand.uniform(8) do
      1 -> ""
      2 -> "/a\0b"
      3 -> "/" <> String.duplicate("n", 256)
      4 -> "/inner/slash"
      5 -> :binary.copy(<<:rand.uniform(255)>>, 1 <<< 20)
      6 -> <<1::3>>
      _ -> :rand.bytes(:rand.uniform(64))
    end
  end

  defp container(_segments, depth) when depth <= 0, do: Enum.random([[], {}, %{}])

  defp container(segments, depth) do
    items = for _ <- 1..:rand.uniform(3), do: term(segments, depth - 1)

    Enum.random([
      items,
      List.to_tuple(items),
      Map.new(items, &{&1, term(segments, depth - 1)}),
      [hd(items) | term(segments, depth - 1)]
    ])
  end

  # A map that is almost a %Shmex{}: a key missing, one added, a foreign
  # __struct__, or every field random.
  defp near_struct(segments, depth) do
    base = Map.from_struct(Enum.random(segments)) |> Map.put(:__struct__, Shmex)

    case :rand.uniform(4) do
      1 -> Map.delete(base, Enum.random([:__struct__, :name, :guard, :size, :capacity]))
      2 -> Map.put(base, term(segments, depth - 1), term(segments, depth - 1))
      3 -> Map.put(base, :__struct__, Enum.random([URI, nil, "Shmex", Shmex.Native]))
      _ -> :maps.map(fn key, _ -> field(key, segments, depth) end, base)
    end
    |> Map.put_new(:__struct__, Shmex)
    |> then(&if(:rand.uniform(4) == 1, do: Map.delete(&1, :__struct__), else: &1))
  end

  # A real struct with one field replaced, often by a plausible value.
  defp mutated(segments, depth) do
    shm = Enum.random(segments)

    key = Enum.random([:name, :guard, :size, :capacity])
    if :rand.uniform(5) == 1, do: shm, else: Map.put(shm, key, field(key, segments, depth))
  end

  defp field(key, segments, depth) do
    case :rand.uniform(3) do
      1 -> integer()
      2 -> Map.get(Enum.random(segments), key, 0)
      _ -> term(segments, depth - 1)
    end
  end
end
