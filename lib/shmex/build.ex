defmodule Shmex.Build do
  @moduledoc """
  Where the files are for native code built against Shmex's C API: C NIFs
  (`#include <shmex/shmex.h>`, link `libshmex.a`), C nodes (the same header
  from the C-node include directory, link `libshmex_cnode.a`) and bundlex
  projects (Membrane's native plugins; `bundlex.exs` uses this module).

  They are installed by `mix compile` in the application's `native/`
  directory, beside `ebin/`: build inputs, which `mix release` does not copy.

      iex> String.contains?(Shmex.Build.cflags(:nif), "/shmex/native/include")
      true

  From the shell, `mix shmex.cflags` and `mix shmex.ldflags` print the
  same flags and nothing else on standard output:

      $ mix shmex.cflags
      -I/…/_build/dev/lib/shmex/native/include -I/…/erts-13.1.5/include
  """

  @typedoc "The kind of native code: a NIF library or a C node."
  @type interface :: :nif | :cnode

  # What Rust's standard library inside the archives needs from the system.
  @system_libs ~w(pthread dl m)

  @doc "The directory of the installed native build files."
  @spec native_dir() :: Path.t()
  def native_dir, do: Application.app_dir(:shmex, "native")

  @doc "The include directories for `interface`, most specific first."
  @spec include_dirs(interface()) :: [Path.t()]
  def include_dirs(:nif), do: [Path.join(native_dir(), "include")]

  def include_dirs(:cnode),
    do: [Path.join(native_dir(), "include_cnode"), Path.join(native_dir(), "include")]

  @doc "The directory holding the archives to link."
  @spec lib_dir() :: Path.t()
  def lib_dir, do: Path.join(native_dir(), "lib")

  @doc "The libraries to link for `interface`, ours first, as `-l` names."
  @spec libs(interface() | :lib) :: [String.t()]
  def libs(:nif), do: ["shmex" | @system_libs]
  def libs(:cnode), do: ["shmex_cnode" | @system_libs]
  def libs(:lib), do: ["shmex_lib" | @system_libs]

  @doc """
  Compiler flags for `interface`: our include directories and the VM's (for
  `erl_nif.h`, or `ei.h` for C nodes).
  """
  @spec cflags(interface()) :: String.t()
  def cflags(interface \\ :nif) do
    (include_dirs(interface) ++ erlang_includes(interface))
    |> Enum.map_join(" ", &"-I#{&1}")
  end

  @doc "Linker flags for `interface` (C nodes also link `ei` themselves)."
  @spec ldflags(interface()) :: String.t()
  def ldflags(interface \\ :nif) do
    Enum.join(["-L#{lib_dir()}" | Enum.map(libs(interface), &"-l#{&1}")], " ")
  end

  @doc false
  # The libraries bundlex.exs declares, as Shmex 0.5.1's: `:lib` (no
  # interface), and `:shmex` for NIFs and for C nodes. The code comes from
  # the archives in `lib_dir/0`; bundlex also insists on linking
  # `priv/bundlex/<interface>/<name>.a` of a dependency, so those are made
  # here, empty, when a bundlex build first asks.
  @spec bundlex_libs() :: keyword()
  def bundlex_libs do
    for {name, interface} <- [lib: nil, shmex: :nif, shmex: :cnode] do
      placeholder(name, interface)
      kind = interface || :lib

      config = [
        # Built by cargo, not by bundlex, which wants sources named anyway.
        src_base: "../native/shmex_c/src",
        sources: ["lib.rs"],
        includes: include_dirs(interface || :nif),
        lib_dirs: [lib_dir()],
        libs: libs(kind)
      ]

      {name, if(interface, do: [interface: interface] ++ config, else: config)}
    end
  end

  defp placeholder(name, interface) do
    path = Path.join([:code.priv_dir(:shmex), "bundlex", "#{interface}", "#{name}.a"])

    unless File.exists?(path) do
      File.mkdir_p!(Path.dirname(path))
      temporary = "#{path}.#{System.unique_integer([:positive])}.#{System.pid()}"
      File.write!(temporary, "!<arch>\n")
      File.rename!(temporary, path)
    end
  end

  defp erlang_includes(:nif),
    do: [Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "include"])]

  defp erlang_includes(:cnode),
    do: [Path.join(:code.lib_dir(:erl_interface), "include") | erlang_includes(:nif)]
end
