defmodule Shmex.FuzzTest do
  # Thousands of hostile terms into every public function: each call returns
  # its documented shape or raises ArgumentError / FunctionClauseError, and
  # the VM is still here afterwards. Structs that calls return join the pool
  # later calls draw from, so sequences of calls get explored too. Replay a
  # failure with FUZZ_SEED=<seed>.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.Hostile

  @calls 2_000

  # Each function, its arguments' kinds, and the error reasons its docs list
  # besides those of every call on a segment (`{posix, syscall}` and
  # `:invalid_payload`, Shmex.Native's segment_error type).
  @native [
    {:allocate, [:shm], []},
    {:add_guard, [:shm], [:already_guarded]},
    {:set_capacity, [:shm, :count], []},
    {:read, [:shm], []},
    {:read, [:shm, :count], [:invalid_read_size]},
    {:write, [:shm, :data], []},
    {:split_at, [:shm, :count], [:invalid_position]},
    {:append, [:shm, :shm], []},
    {:ensure_not_gc, [:shm], []},
    {:trim, [:shm], []},
    {:trim, [:shm, :count], [:invalid_trim_size]}
  ]

  @helpers [
    empty: [:count],
    new: [:data],
    new: [:data, :count],
    set_capacity: [:shm, :count],
    ensure_not_gc: [:shm],
    to_binary: [:shm]
  ]

  setup do
    seed = String.to_integer(System.get_env("FUZZ_SEED") || "#{:rand.uniform(1_000_000_000)}")
    Hostile.seed(seed)
    %{seed: seed}
  end

  for {function, kinds, reasons} <- @native do
    test "Shmex.Native.#{function}/#{length(kinds)}", %{seed: seed} do
      reasons = unquote(reasons)

      fuzz(Native, unquote(function), unquote(kinds), seed, fn
        :ok -> true
        {:ok, _} -> true
        {:error, reason} -> documented?(reason, reasons)
        _ -> false
      end)
    end
  end

  # A reason the docs list: an errno atom and one of the three syscalls,
  # :invalid_payload, or one of the function's own.
  defp documented?({posix, syscall}, _reasons) when is_atom(posix) do
    syscall in [:shm_open, :ftruncate, :mmap] and
      :file.format_error(posix) != ~c"unknown POSIX error"
  end

  defp documented?(:invalid_payload, _reasons), do: true
  defp documented?(reason, reasons), do: reason in reasons

  for {function, kinds} <- @helpers do
    test "Shmex.#{function}/#{length(kinds)}", %{seed: seed} do
      fuzz(Shmex, unquote(function), unquote(kinds), seed, fn
        %Shmex{} -> true
        binary when is_binary(binary) -> true
        :ok -> true
        _ -> false
      end)
    end
  end

  defp fuzz(module, function, kinds, seed, expected?) do
    pool = [Shmex.new("seed data"), Shmex.empty(0), Shmex.new(:binary.copy("ab", 5000), 20_000)]

    Enum.reduce(1..@calls, pool, fn call, pool ->
      args = Enum.map(kinds, &Hostile.arg(&1, pool))
      outcome = call(module, function, args)

      where = fn ->
        "call #{call} with FUZZ_SEED=#{seed}: #{inspect(module)}.#{function}" <>
          inspect(args, limit: 8, printable_limit: 40)
      end

      case outcome do
        {:returned, result} ->
          unless expected?.(result), do: flunk("#{where.()} returned #{inspect(result)}")

        {:raised, %Shmex.Error{}} ->
          unless module == Shmex, do: flunk("#{where.()} raised Shmex.Error")

        {:raised, _allowed} ->
          :ok
      end

      # Only modest segments are reused: appending a segment to itself over
      # and over would otherwise grow it without bound.
      Enum.take(Enum.filter(structs(outcome), &(&1.capacity <= 1 <<< 22)) ++ pool, 8)
    end)
  end

  defp call(module, function, args) do
    {:returned, apply(module, function, args)}
  rescue
    error in [ArgumentError, FunctionClauseError, Shmex.Error] -> {:raised, error}
  end

  defp structs({:returned, {:ok, {%Shmex{} = left, %Shmex{} = right}}}), do: [left, right]
  defp structs({:returned, {:ok, %Shmex{} = shm}}), do: [shm]
  defp structs({:returned, %Shmex{} = shm}), do: [shm]
  defp structs(_outcome), do: []
end
