defmodule Shmex.Test.Space do
  @moduledoc false
  # How much room /dev/shm has, for the tests that need much of it: on a
  # small /dev/shm (Docker's default is 64 MiB) they are skipped, saying why,
  # rather than failing with ENOSPC. Async tests share the room, so a test
  # runs only if it needs at most half of what is free when the suite starts.

  import Bitwise

  @doc """
  `nil` if /dev/shm has room for a test needing `bytes`; else the reason to
  skip it, which is also printed. For `@tag skip: Space.lacking(...)`.
  """
  def lacking(bytes, what) do
    free = free_bytes()

    if bytes <= div(free, 2) do
      nil
    else
      reason = "#{what} needs #{mib(bytes)} of /dev/shm, which has #{mib(free)} free"
      IO.puts("skipping: #{reason}")
      reason
    end
  end

  @doc "Bytes free in /dev/shm, as `df` reports them."
  def free_bytes do
    {output, 0} = System.cmd("df", ["-B1", "--output=avail", "/dev/shm"])
    output |> String.split() |> List.last() |> String.to_integer()
  end

  defp mib(bytes), do: "#{bytes >>> 20} MiB"
end
