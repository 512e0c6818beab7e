defmodule Shmex.LeftoversTest do
  # A VM that dies without running destructors (here: SIGKILL) leaves its
  # guarded segments in /dev/shm; the next VM that loads the library removes
  # them before its first call returns, and nothing else: not a live VM's
  # segments, not a file another program made, not a segment a live VM
  # guards too. Each case runs its VMs in a tmpfs of their own.
  use ExUnit.Case, async: true

  use Shmex.Test.PrivateShm

  # Holds its own segments, and one the doomed VM guards too; reads them
  # all back once told to.
  @live ~S"""
  alias Shmex.Native
  dir = System.fetch_env!("SCRATCH")
  mine = for i <- 1..5, do: Shmex.new("live #{i}")
  {:ok, named} = Native.allocate(%Shmex{name: "/live-named", capacity: 10})
  {:ok, named} = Native.write(named, "live named")
  {:ok, shared} = Native.allocate(%Shmex{name: "/live-shared", capacity: 6})
  {:ok, shared} = Native.write(shared, "shared")
  all = [named, shared | mine]
  File.write!(Path.join(dir, "live.names"), Enum.map_join(all, "\n", & &1.name))
  File.touch!(Path.join(dir, "live.ready"))
  wait = fn wait, n -> if File.exists?(Path.join(dir, "check")) or n == 0, do: :ok, else: (Process.sleep(50); wait.(wait, n - 1)) end
  wait.(wait, 2400)
  expected = ["live named", "shared" | for(i <- 1..5, do: "live #{i}")]
  IO.puts("live reads back: #{Enum.map(all, &Shmex.to_binary/1) == expected}")
  """

  # Guards generated and named segments, from Elixir and from C, and one
  # of the live VM's; then kills itself with SIGKILL.
  @doomed ~S"""
  alias Shmex.Native
  Shmex.Test.Beam.load_natives()
  dir = System.fetch_env!("SCRATCH")
  generated = for i <- 1..50, do: Shmex.new("doomed #{i}")
  named = for i <- 1..5 do
    {:ok, shm} = Native.allocate(%Shmex{name: "/doomed-named-#{i}", capacity: 1})
    shm
  end
  {:ok, c_named} = ShmexCClient.Nif.allocate_named("/doomed-c-named", 10)
  {:ok, c_generated} = ShmexCClient.Nif.allocate(10, 1)
  {:ok, also_live} = Native.add_guard(%Shmex{name: "/live-shared", capacity: 6, size: 6})
  all = [c_named, c_generated | generated ++ named]
  File.write!(Path.join(dir, "doomed.names"), Enum.map_join(all, "\n", & &1.name))
  :os.cmd(~c"kill -9 #{System.pid()}")
  Process.sleep(:infinity)
  Shmex.ensure_not_gc([also_live | all])
  """

  # Starts, makes one call, and looks.
  @third ~S"""
  {:ok, _} = Shmex.Native.allocate(%Shmex{})
  File.write!(Path.join(System.fetch_env!("SCRATCH"), "after"), Enum.join(File.ls!("/dev/shm"), "\n"))
  """

  # Each VM in the pid namespace `$NS` asks for ("unshare -p -f" or none);
  # `sh` stays pid 1 there, so that the BEAM's SIGKILL to itself is not the
  # one signal a namespace's init ignores.
  @script ~S"""
  set -e
  mount -t tmpfs -o size=64m tmpfs /dev/shm
  vm() { $NS sh -c 'elixir -pa "$0" -e "$1"; exit $?' "$EBIN" "$1"; }
  vm "$LIVE" > "$SCRATCH/live.out" 2>&1 &
  live=$!
  i=0; until [ -e "$SCRATCH/live.ready" ]; do sleep 0.05; i=$((i+1)); [ $i -lt 1200 ]; done
  echo made by another program > /dev/shm/another-program
  status=0; vm "$DOOMED" > "$SCRATCH/doomed.out" 2>&1 || status=$?
  echo "doomed exited $status"
  ls -A /dev/shm > "$SCRATCH/before"
  vm "$THIRD"
  touch "$SCRATCH/check"
  wait $live
  cat "$SCRATCH/live.out"
  """

  test "a SIGKILLed VM's segments are gone once the next VM starts, and only those" do
    check_leftovers_removed(ns: "")
  end

  test "the same with each VM in a pid namespace of its own" do
    case System.cmd("unshare", ["-p", "-f", "true"], stderr_to_stdout: true) do
      {_, 0} -> check_leftovers_removed(ns: "unshare -p -f")
      {output, _} -> flunk("unshare -p -f is refused here, though -m is not: #{output}")
    end
  end

  defp check_leftovers_removed(ns: ns) do
    scratch =
      Path.join(
        System.tmp_dir!(),
        "shmex-leftovers-#{System.pid()}-#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(scratch)
    on_exit(fn -> File.rm_rf!(scratch) end)

    env = [
      {"NS", ns},
      {"SCRATCH", scratch},
      {"EBIN", Path.dirname(:code.which(Shmex))},
      {"LIVE", @live},
      {"DOOMED", @doomed},
      {"THIRD", @third},
      {"SHMEX_TEST_NATIVES", Shmex.Test.NativeBuild.scratch_dir()}
    ]

    {output, status} =
      System.cmd("unshare", ["-m", "sh", "-c", @script], env: env, stderr_to_stdout: true)

    assert status == 0, output
    assert output =~ "doomed exited 137", output
    assert output =~ "live reads back: true", output

    lines = &(scratch |> Path.join(&1) |> File.read!() |> String.split("\n", trim: true))
    strip = fn names -> Enum.map(names, &String.trim_leading(&1, "/")) end
    doomed = strip.(lines.("doomed.names"))
    live = strip.(lines.("live.names"))
    before = lines.("before")
    after_start = lines.("after")

    assert length(doomed) == 57
    assert doomed -- before == [], "the doomed VM's segments were there while it was dead"
    assert Enum.filter(doomed, &(&1 in after_start)) == [], "and are gone once the next VM ran"
    assert live -- after_start == [], "the live VM's segments stay"
    assert "another-program" in after_start
    # Sessions: the live VM's and the doomed VM's; then the live VM's and
    # the third's.
    sessions = &Enum.filter(&1, fn name -> String.starts_with?(name, ".shmex-session-") end)
    assert length(sessions.(before)) == 2
    assert length(sessions.(after_start)) == 2
    assert length(sessions.(after_start) -- sessions.(before)) == 1
  end
end
