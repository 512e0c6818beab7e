defmodule Shmex.Test.IsolatedBeam do
  @moduledoc false
  # Runs Elixir code in another BEAM inside its own mount namespace, on a
  # private tmpfs mounted over /dev/shm: a /dev/shm we can fill, or one that
  # is another host's as far as segment names go. Needs `unshare -m` and
  # `mount`, so root (or CAP_SYS_ADMIN).

  @doc "Why isolated BEAMs cannot run here, or nil if they can."
  def unavailable_reason do
    cond do
      System.find_executable("unshare") == nil ->
        "unshare(1) is not installed"

      match?({_, 0}, System.cmd("unshare", ["-m", "sh", "-c", mount(1)], stderr_to_stdout: true)) ->
        nil

      true ->
        "mounting a tmpfs in a new mount namespace is not permitted (needs root)"
    end
  end

  @doc """
  Evaluates `code` in a BEAM whose /dev/shm is a fresh `megabytes` MiB tmpfs;
  returns `{output, exit_status}`.
  """
  def run(code, megabytes) do
    ebin = Path.dirname(:code.which(Shmex))
    script = ~s(#{mount(megabytes)} && exec elixir -pa "$1" -e "$2")
    System.cmd("unshare", ["-m", "sh", "-c", script, "sh", ebin, code], stderr_to_stdout: true)
  end

  defp mount(megabytes), do: "mount -t tmpfs -o size=#{megabytes}m tmpfs /dev/shm"
end
