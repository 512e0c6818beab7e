# A tour of Shmex: allocate, write, split, append, read, and a second OS
# process reading a segment by name.
#
#     mix run examples/pipeline.exs

alias Shmex.Native

# Allocate a 64-byte segment and write into it.
{:ok, shm} = Native.allocate(%Shmex{capacity: 64})
{:ok, shm} = Native.write(shm, "Hello from the BEAM, through shared memory!")
IO.puts("allocated #{shm.name}: size #{shm.size}, capacity #{shm.capacity}")

# Split it: the tail moves to a new segment with a guard of its own.
{:ok, {greeting, tail}} = Native.split_at(shm, 5)
IO.puts("split:    #{inspect(Shmex.to_binary(greeting))} + #{inspect(Shmex.to_binary(tail))}")

# Append the tail back: `greeting` keeps its name, and grows to fit.
{:ok, joined} = Native.append(greeting, tail)
{:ok, data} = Native.read(joined)
IO.puts("appended: #{inspect(data)} (#{joined.name}, capacity #{joined.capacity})")

# Another OS process opens the segment by name. Here it is a second BEAM
# using Shmex itself; any program can, e.g. `cat /dev/shm/<name>` on Linux.
ebin = Path.dirname(:code.which(Shmex))

reader = """
shm = %Shmex{name: #{inspect(joined.name)}, size: #{joined.size}, capacity: #{joined.capacity}}
{:ok, data} = Shmex.Native.read(shm)
IO.puts("os pid \#{System.pid()} read: \#{inspect(data)}")
"""

{output, 0} = System.cmd("elixir", ["-pa", ebin, "-e", reader])
IO.write(output)

# Until here the segment had to stay alive for the other process; once
# `joined` is garbage collected, its guard unlinks the segment.
:ok = Shmex.ensure_not_gc(joined)
