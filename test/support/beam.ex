defmodule Shmex.Test.Beam do
  @moduledoc false
  # Runs Elixir code in another BEAM, an OS process of its own: to watch it
  # crash or survive, to kill it, to give it small limits (`ulimit`), or a
  # /dev/shm of its own, a fresh tmpfs in its own mount namespace (needs
  # `unshare -m` and `mount`, so root or CAP_SYS_ADMIN). It loads the test
  # natives (the Rust example NIF and the C client) with `load_natives/0`.

  alias Shmex.Test.NativeBuild

  @doc "Why a BEAM cannot have a private /dev/shm here, or nil if it can."
  def private_shm_unavailable do
    cond do
      System.find_executable("unshare") == nil ->
        "unshare(1) is not installed"

      true ->
        case System.cmd("unshare", ["-m", "sh", "-c", mount(1)], stderr_to_stdout: true) do
          {_, 0} ->
            nil

          {output, _} ->
            "cannot mount a tmpfs of its own (needs root, outside a chroot): " <>
              (output |> String.split("\n", trim: true) |> List.first("no reason given"))
        end
    end
  end

  @doc """
  Evaluates `code` in a new BEAM; returns `{output, exit_status}`.

  Options: `shm_megabytes:` a private /dev/shm of that size, `ulimit:` a
  `ulimit` argument string (`"-n 64"`), `erl:` the VM's flags (`"+SDcpu
  2:2"`), `timeout:` in milliseconds.
  """
  def run(code, opts \\ []) do
    port = Port.open({:spawn_executable, "/bin/sh"}, port_options(code, opts))
    collect(port, Keyword.get(opts, :timeout, 120_000), [])
  end

  @doc """
  Starts `code` in a new BEAM and waits until it prints `ready <os pid>`;
  returns the port and that pid.
  """
  def start(code) do
    port = Port.open({:spawn_executable, "/bin/sh"}, port_options(code, []))
    {port, await_ready(port, "")}
  end

  @doc "Kills a BEAM `start/1` started with SIGKILL, and waits until it is gone."
  def kill(port, os_pid) do
    {_, 0} = System.cmd("kill", ["-9", os_pid])

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      30_000 -> raise "BEAM #{os_pid} survived kill -9"
    end
  end

  @doc "In the other BEAM: loads the natives this suite staged."
  def load_natives do
    dir = System.fetch_env!("SHMEX_TEST_NATIVES")
    :ok = ShmexExample.Nif.load(Path.join(dir, "shmex_example"))
    :ok = ShmexCClient.Nif.load(Path.join(dir, "shmex_c_client"))
  end

  defp port_options(code, opts) do
    ebin = Path.dirname(:code.which(Shmex))
    limits = opts |> Keyword.get_values(:ulimit) |> Enum.map_join(&"ulimit #{&1} && ")
    mount = if mb = opts[:shm_megabytes], do: mount(mb) <> " && ", else: ""
    erl = if flags = opts[:erl], do: ~s(--erl "#{flags}" ), else: ""
    inner = ~s(#{limits}#{mount}exec elixir #{erl}-pa "$1" -e "$2")

    script =
      if opts[:shm_megabytes], do: ~s(exec unshare -m sh -c '#{inner}' sh "$1" "$2"), else: inner

    [
      :binary,
      :exit_status,
      :stderr_to_stdout,
      args: ["-c", script, "sh", ebin, code],
      env: [{~c"SHMEX_TEST_NATIVES", String.to_charlist(NativeBuild.scratch_dir())}]
    ]
  end

  defp collect(port, timeout, acc) do
    receive do
      {^port, {:data, data}} -> collect(port, timeout, [acc | data])
      {^port, {:exit_status, status}} -> {IO.iodata_to_binary(acc), status}
    after
      timeout -> raise "BEAM did not finish in #{timeout} ms:\n#{IO.iodata_to_binary(acc)}"
    end
  end

  defp await_ready(port, seen) do
    receive do
      {^port, {:data, data}} ->
        seen = seen <> data

        case Regex.run(~r/ready (\d+)/, seen, capture: :all_but_first) do
          [os_pid] -> os_pid
          nil -> await_ready(port, seen)
        end

      {^port, {:exit_status, status}} ->
        raise "BEAM exited (#{status}) before it was ready:\n#{seen}"
    after
      60_000 -> raise "BEAM not ready after 60 s:\n#{seen}"
    end
  end

  defp mount(megabytes), do: "mount -t tmpfs -o size=#{megabytes}m tmpfs /dev/shm"
end
