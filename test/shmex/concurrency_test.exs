defmodule Shmex.ConcurrencyTest do
  # Many processes at once, on schedulers in parallel: each works on its own
  # segment and checks it against a plain binary, and all of them keep
  # reading one shared segment.
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native

  @processes 48
  @calls 400

  test "#{@processes} processes: private segments match their model, the shared one never changes" do
    shared_data = :rand.bytes(100_000)
    shared = Shmex.new(shared_data)

    failures =
      1..@processes
      |> Task.async_stream(&worker(&1, shared, shared_data),
        timeout: :infinity,
        max_concurrency: @processes
      )
      |> Enum.reject(&(&1 == {:ok, :ok}))

    assert failures == []
    assert Native.read(shared) == {:ok, shared_data}
  end

  @tag skip: Shmex.Test.Space.lacking(4 * (64 <<< 20), "64 MiB copies")
  test "copies that go on in steps keep their turn: reads see a write whole or not at all" do
    # 64 MiB writes and reads take several steps on a dirty scheduler,
    # each step rescheduled: other calls on the segment must still wait for
    # the whole copy.
    old = :binary.copy(<<1>>, 64 <<< 20)
    new = :binary.copy(<<2>>, 64 <<< 20)
    shm = Shmex.new(old)

    writer =
      Task.async(fn ->
        for data <- [new, old, new, old, new], do: {:ok, _} = Native.write(shm, data)
      end)

    reads =
      for _ <- 1..20 do
        {:ok, data} = Native.read(shm)
        data == old or data == new
      end

    Task.await(writer, 60_000)
    assert Enum.all?(reads)
  end

  defp worker(seed, shared, shared_data) do
    :rand.seed(:exsss, {seed, seed, seed})
    data = :rand.bytes(:rand.uniform(5_000))

    Enum.reduce_while(1..@calls, {Shmex.new(data), data}, fn call, {shm, model} ->
      {observed, expected, state} = step(:rand.uniform(6), shm, model, shared, shared_data)

      cond do
        observed != expected -> {:halt, {:mismatch, seed, call, observed, expected}}
        Native.read(shared) != {:ok, shared_data} -> {:halt, {:shared_changed, seed, call}}
        true -> {:cont, state || {shm, model}}
      end
    end)
    |> case do
      {%Shmex{}, _model} -> :ok
      failure -> failure
    end
  end

  # Each step: what the call gave, what the model says, and the new state
  # (nil when unchanged).
  defp step(1, _shm, _model, shared, shared_data) do
    n = :rand.uniform(100_001) - 1
    {Native.read(shared, n), {:ok, binary_part(shared_data, 0, n)}, nil}
  end

  defp step(2, shm, _model, _shared, _shared_data) do
    data = :rand.bytes(:rand.uniform(6_000))
    {:ok, shm} = Native.write(shm, data)
    {Shmex.to_binary(shm), data, {shm, data}}
  end

  defp step(3, shm, model, _shared, _shared_data) do
    n = count(model)

    expected =
      if n <= byte_size(model), do: {:ok, head(model, n)}, else: {:error, :invalid_read_size}

    {Native.read(shm, n), expected, nil}
  end

  defp step(4, shm, model, _shared, _shared_data) do
    n = count(model)

    case Native.split_at(shm, n) do
      {:ok, {left, right}} ->
        observed = {Shmex.to_binary(left), Shmex.to_binary(right)}
        {observed, {head(model, n), tail(model, n)}, {left, head(model, n)}}

      error ->
        {error, if(n > byte_size(model), do: {:error, :invalid_position}), nil}
    end
  end

  defp step(5, shm, model, _shared, _shared_data) do
    extra = :rand.bytes(:rand.uniform(100))
    {:ok, shm} = Native.append(shm, Shmex.new(extra))
    {Shmex.to_binary(shm), model <> extra, {shm, model <> extra}}
  end

  defp step(6, shm, model, _shared, _shared_data) do
    n = count(model)

    case Native.trim(shm, n) do
      {:ok, shm} -> {Shmex.to_binary(shm), tail(model, n), {shm, tail(model, n)}}
      error -> {error, if(n > byte_size(model), do: {:error, :invalid_trim_size}), nil}
    end
  end

  # A byte count around the data's size, sometimes past it.
  defp count(model), do: :rand.uniform(byte_size(model) + 10) - 1
  defp head(model, n), do: binary_part(model, 0, n)
  defp tail(model, n), do: binary_part(model, n, byte_size(model) - n)
end
