defmodule Shmex.ModelTest do
  # Seeded random sequences of Shmex.Native calls, each checked against a
  # model where a segment is a binary and a struct is a value whose claims
  # may be stale or forged. Replay a failure with MODEL_SEED=<seed>.
  use ExUnit.Case, async: true

  alias Shmex.Native
  alias Shmex.Test.Segments

  @steps 3_000

  test "Shmex.Native calls match the model" do
    seed = String.to_integer(System.get_env("MODEL_SEED") || "#{:rand.uniform(1_000_000_000)}")
    :rand.seed(:exsss, {seed, 7, 11})
    start = %{structs: [], segments: %{}}

    Enum.reduce(1..@steps, start, fn step, world ->
      {call, world} = step(world)

      try do
        check(call, world)
      rescue
        error in ExUnit.AssertionError ->
          reraise %{error | message: "step #{step}, MODEL_SEED=#{seed}: #{error.message}"},
                  __STACKTRACE__
      end
    end)
  end

  defp step(%{structs: []} = world), do: {{:allocate, len(), 0}, world}

  defp step(world) do
    shm = Enum.random(world.structs)

    call =
      case :rand.uniform(11) do
        1 -> {:allocate, len(), len()}
        2 -> {:write, shm, :rand.bytes(len())}
        3 -> {:read, shm, len()}
        4 -> {:set_capacity, shm, len()}
        5 -> {:split_at, shm, len()}
        6 -> {:append, shm, Enum.random(world.structs)}
        7 -> {:trim, shm, len()}
        8 -> {:trim, shm}
        9 -> {:forge, shm, len(), len()}
        10 -> {:truncate_elsewhere, shm, len()}
        11 -> {:read, %{shm | guard: nil}, len()}
      end

    {call, world}
  end

  # Small lengths often, so that the edges (0, 1, exactly the size) come up.
  defp len, do: if(:rand.uniform(3) == 1, do: :rand.uniform(4) - 1, else: :rand.uniform(400) - 1)

  defp check({:allocate, capacity, size}, world) do
    case Native.allocate(%Shmex{capacity: capacity, size: size}) do
      {:ok, shm} ->
        assert size <= capacity and {shm.size, shm.capacity} == {size, capacity}
        add(world, shm, :binary.copy(<<0>>, capacity))

      error ->
        assert size > capacity and error == {:error, :invalid_payload}
        world
    end
  end

  defp check({:write, shm, data}, world) do
    capacity = max(shm.capacity, byte_size(data))
    contents = model(world, shm) |> at_least(capacity) |> overwrite(data)
    assert Native.write(shm, data) == {:ok, %{shm | size: byte_size(data), capacity: capacity}}

    world
    |> put_contents(shm, contents)
    |> add(%{shm | size: byte_size(data), capacity: capacity})
  end

  defp check({:read, shm, len}, world) do
    expected =
      cond do
        len > shm.size -> {:error, :invalid_read_size}
        not fits?(world, shm) -> {:error, :invalid_payload}
        true -> {:ok, binary_part(model(world, shm), 0, len)}
      end

    assert Native.read(shm, len) == expected
    world
  end

  defp check({:set_capacity, shm, capacity}, world) do
    if fits?(world, shm) do
      resized = %{shm | size: min(shm.size, capacity), capacity: capacity}
      assert Native.set_capacity(shm, capacity) == {:ok, resized}
      contents = model(world, shm) |> at_least(capacity) |> binary_part(0, capacity)
      world |> put_contents(shm, contents) |> add(resized)
    else
      assert Native.set_capacity(shm, capacity) == {:error, :invalid_payload}
      world
    end
  end

  defp check({:split_at, shm, position}, world) do
    case Native.split_at(shm, position) do
      {:ok, {left, right}} ->
        assert position <= shm.size and fits?(world, shm)
        assert left == %{shm | size: position}
        assert right.name != shm.name and is_reference(right.guard)
        assert {right.size, right.capacity} == {shm.size - position, shm.size - position}
        tail = binary_part(model(world, shm), position, shm.size - position)
        world |> add(left) |> add(right, tail)

      {:error, :invalid_position} ->
        assert position > shm.size
        world

      error ->
        assert error == {:error, :invalid_payload} and not fits?(world, shm)
        world
    end
  end

  defp check({:append, target, source}, world) do
    if fits?(world, target) and fits?(world, source) do
      contents =
        binary_part(model(world, target), 0, target.size) <>
          binary_part(model(world, source), 0, source.size)

      size = byte_size(contents)
      assert Native.append(target, source) == {:ok, %{target | size: size, capacity: size}}
      world |> put_contents(target, contents) |> add(%{target | size: size, capacity: size})
    else
      assert Native.append(target, source) == {:error, :invalid_payload}
      world
    end
  end

  defp check({:trim, shm, bytes}, world) do
    cond do
      bytes > shm.size ->
        assert Native.trim(shm, bytes) == {:error, :invalid_trim_size}
        world

      not fits?(world, shm) ->
        assert Native.trim(shm, bytes) == {:error, :invalid_payload}
        world

      true ->
        rest = shm.size - bytes
        assert Native.trim(shm, bytes) == {:ok, %{shm | size: rest, capacity: rest}}
        contents = binary_part(model(world, shm), bytes, rest)
        world |> put_contents(shm, contents) |> add(%{shm | size: rest, capacity: rest})
    end
  end

  defp check({:trim, shm}, world) do
    if fits?(world, shm) do
      assert Native.trim(shm) == {:ok, %{shm | capacity: shm.size}}
      contents = binary_part(model(world, shm), 0, shm.size)
      world |> put_contents(shm, contents) |> add(%{shm | capacity: shm.size})
    else
      assert Native.trim(shm) == {:error, :invalid_payload}
      world
    end
  end

  defp check({:forge, shm, size, capacity}, world) do
    add(world, %{shm | size: size, capacity: capacity})
  end

  # Another OS process shrinks or grows the segment behind our back.
  defp check({:truncate_elsewhere, shm, len}, world) do
    {_, 0} = System.cmd("truncate", ["-s", "#{len}", Segments.path(shm)])
    contents = model(world, shm) |> at_least(len) |> binary_part(0, len)
    put_contents(world, shm, contents)
  end

  defp model(world, shm), do: Map.fetch!(world.segments, shm.name)

  defp fits?(world, shm),
    do: shm.size <= shm.capacity and shm.capacity <= byte_size(model(world, shm))

  defp put_contents(world, shm, contents),
    do: %{world | segments: Map.put(world.segments, shm.name, contents)}

  # Every struct is kept, so no guard is collected and stale copies stay around.
  defp add(world, shm), do: %{world | structs: [shm | world.structs]}
  defp add(world, shm, contents), do: world |> add(shm) |> put_contents(shm, contents)

  defp at_least(contents, len) when byte_size(contents) >= len, do: contents
  defp at_least(contents, len), do: contents <> :binary.copy(<<0>>, len - byte_size(contents))

  defp overwrite(contents, data) do
    data <> binary_part(contents, byte_size(data), byte_size(contents) - byte_size(data))
  end
end
