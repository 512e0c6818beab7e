defmodule Shmex.Mix.Archive do
  @moduledoc false
  # Turns a Rust static library (the crate, its dependencies and Rust's
  # standard library: over 20 MB) into the archive C code links: one object
  # holding what the C API's functions use and nothing else, whose only
  # global symbols are those functions. So a C NIF linking it grows by a few
  # hundred kilobytes, and two such archives (or another Rust static library)
  # can be linked into one shared object without their Rust symbols clashing.
  #
  # Needs a C compiler driver (`cc`, or $CC) and binutils' `objcopy` and
  # `ar`; without them the static library is installed as it is.

  @doc """
  Writes to `output` an archive of `staticlib` exporting the functions the
  `headers` declare; with `weak: true` those are weak symbols, giving way to
  another definition linked beside them.
  """
  @spec build!(Path.t(), [Path.t()], Path.t(), keyword()) :: :ok
  def build!(staticlib, headers, output, opts \\ []) do
    exports = headers |> Enum.flat_map(&functions/1) |> Enum.uniq()
    File.mkdir_p!(Path.dirname(output))
    work = Path.join(Path.dirname(output), ".#{Path.basename(output)}.build")
    File.rm_rf!(work)
    File.mkdir_p!(work)

    try do
      case prelink(staticlib, exports, work, Keyword.get(opts, :weak, false)) do
        {:ok, object} ->
          run!("ar", ["rcs", Path.join(work, "lib.a"), object])
          File.rename!(Path.join(work, "lib.a"), output)

        {:error, why} ->
          Mix.shell().info("Installing #{Path.basename(output)} unreduced (#{why})")
          File.cp!(staticlib, Path.join(work, "lib.a"))
          File.rename!(Path.join(work, "lib.a"), output)
      end
    after
      File.rm_rf!(work)
    end

    :ok
  end

  # The functions a header declares (`shmex_...(`).
  defp functions(header) do
    ~r/\b(shmex_\w+)\s*\(/
    |> Regex.scan(File.read!(header), capture: :all_but_first)
    |> List.flatten()
  end

  defp prelink(staticlib, exports, work, weak) do
    cc = System.get_env("CC", "cc")
    tools = [cc, "objcopy", "ar"]

    case Enum.reject(tools, &System.find_executable/1) do
      [] ->
        list = Path.join(work, "exports")
        File.write!(list, Enum.join(exports, "\n"))
        whole = Path.join(work, "whole.o")
        local = Path.join(work, "local.o")
        final = Path.join(work, "shmex.o")
        # One object of everything, then only the API global (and debug
        # info and LLVM bitcode dropped), then the unused sections dropped:
        # the linker only drops sections no global symbol defines.
        run!(
          cc,
          ["-r", "-nostdlib", "-o", whole, "-Wl,--whole-archive", staticlib] ++
            ["-Wl,--no-whole-archive"]
        )

        run!(
          "objcopy",
          [
            "--strip-debug",
            "--remove-section=.llvmbc",
            "--remove-section=.llvmcmd",
            "--keep-global-symbols=#{list}" | if(weak, do: ["--weaken"], else: [])
          ] ++ [whole, local]
        )

        roots = Enum.map(exports, &"-Wl,-u,#{&1}")
        run!(cc, ["-r", "-nostdlib", "-Wl,--gc-sections"] ++ roots ++ ["-o", final, local])
        {:ok, final}

      missing ->
        {:error, "#{Enum.join(missing, ", ")} not found"}
    end
  end

  defp run!(command, args) do
    case System.cmd(command, args, stderr_to_stdout: true) do
      {_, 0} ->
        :ok

      {output, status} ->
        Mix.raise("#{command} #{Enum.join(args, " ")} failed (#{status}):\n#{output}")
    end
  end
end
