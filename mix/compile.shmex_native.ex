defmodule Mix.Tasks.Compile.ShmexNative do
  @shortdoc "Installs the Shmex NIF and its C APIs, precompiled or built with cargo"
  @moduledoc """
  Installs a precompiled artifact when the checksum file (`checksum-shmex.exs`,
  shipped in the Hex package) lists one for this VM's target and NIF
  version: downloaded from `SHMEX_PRECOMPILED_URL` (by default the project's
  release downloads for its version) and checked against its sha256 before
  any file is written. Otherwise, or with `SHMEX_BUILD=1`, builds the Rust
  workspace with `cargo build --release`, saying why. Either way it installs:

    * `priv/native/shmex_nif.so` - the NIF library behind `Shmex.Native`, the
      one file a running system needs;
    * in the application's `native/` directory (`Shmex.Build.native_dir/0`),
      which releases do not carry: Shmex 0.5.1's C API for C NIFs
      (`include/shmex/*.h`, `lib/libshmex.a`) and for C nodes
      (`include_cnode/shmex/shmex.h`, `lib/libshmex_cnode.a`), and the
      interface-less `lib/libshmex_lib.a`, for natives built against it
      (bundlex links them, see `bundlex.exs`).

  Defined outside `lib/` (and required by `mix.exs`) because a compiler has
  to exist before the project's own modules are compiled.
  """
  use Mix.Task.Compiler

  alias Shmex.Mix.{Archive, Cargo, Precompiled}

  @impl Mix.Task.Compiler
  def run(_args) do
    root = File.cwd!()
    config = Mix.Project.config()
    paths = [so: priv_nif(root), native: Path.join(Mix.Project.app_path(), "native")]

    changed =
      case Precompiled.choose(root, config[:version]) do
        {:download, name, sum} ->
          base_url = System.get_env("SHMEX_PRECOMPILED_URL") || config[:shmex_precompiled_url]
          Precompiled.install!(name, sum, base_url, paths)

        {:source, why} ->
          # What an artifact installed would look newer than a build's
          # outputs: built anew instead.
          if File.exists?(Path.join(paths[:native], "precompiled")),
            do: File.rm_rf!(paths[:native])

          from_source(root, paths, why: why)
      end

    # priv/ may not have existed when Mix linked it into _build.
    Mix.Project.build_structure()
    {changed, []}
  end

  @doc """
  Builds the workspace at `root` with cargo and installs the NIF library at
  `paths[:so]` and the C API's files under `paths[:native]`; `:ok` when a
  file changed. Options go to `Shmex.Mix.Cargo.build!/2` (`:target`,
  `:zigbuild`) and `:why` says why this builds from source.
  """
  @spec from_source(Path.t(), keyword(), keyword()) :: :ok | :noop
  def from_source(root, paths, opts \\ []) do
    native = Path.join(root, "native")
    installed = paths[:native]
    why = if opts[:why], do: " (#{opts[:why]})", else: ""
    cargo = [root: root] ++ Keyword.take(opts, [:target, :zigbuild])

    # Two builds: the C-node archive must not contain the NIF parts of the
    # crate (they call the VM, which a C node does not have), and cargo
    # builds a crate with the features any package of one build wants.
    nif = Cargo.build!(["shmex_nif", "shmex_c_nif"], [label: "the Shmex NIF#{why}"] ++ cargo)
    cnode = Cargo.build!(["shmex_c_cnode"], [label: "the Shmex C-node library#{why}"] ++ cargo)

    headers = %{
      lib: Path.join(native, "shmex_c/include/shmex/lib.h"),
      nif: Path.join(native, "shmex_c_nif/include/shmex/shmex.h"),
      nif_compat: Path.join(native, "shmex_c_nif/include/shmex/lib_nif.h"),
      cnode: Path.join(native, "shmex_c_cnode/include/shmex/shmex.h")
    }

    nif_lib = Cargo.library!(nif, "shmex_c_nif", ".a")
    cnode_lib = Cargo.library!(cnode, "shmex_c_cnode", ".a")

    changes = [
      copy(Cargo.library!(nif, "shmex_nif", library_extension(opts[:target])), paths[:so]),
      copy(headers.lib, Path.join(installed, "include/shmex/lib.h")),
      copy(headers.nif, Path.join(installed, "include/shmex/shmex.h")),
      copy(headers.nif_compat, Path.join(installed, "include/shmex/lib_nif.h")),
      copy(headers.cnode, Path.join(installed, "include_cnode/shmex/shmex.h")),
      archive(nif_lib, [headers.lib, headers.nif], Path.join(installed, "lib/libshmex.a")),
      archive(
        cnode_lib,
        [headers.lib, headers.cnode],
        Path.join(installed, "lib/libshmex_cnode.a")
      ),
      archive(cnode_lib, [headers.lib], Path.join(installed, "lib/libshmex_lib.a"), weak: true)
    ]

    if :ok in changes, do: :ok, else: :noop
  end

  @impl Mix.Task.Compiler
  def clean do
    File.rm_rf!(Path.join(Mix.Project.app_path(), "native"))
    File.rm_rf!(Path.join(File.cwd!(), "priv/native"))
  end

  defp priv_nif(root), do: Path.join(root, "priv/native/shmex_nif.so")

  defp library_extension(nil) do
    case :os.type() do
      {:unix, :darwin} -> ".dylib"
      _ -> ".so"
    end
  end

  defp library_extension(target),
    do: if(String.contains?(target, "-apple-darwin"), do: ".dylib", else: ".so")

  # Copies only when the file changed, and through a rename: a VM may have
  # the old library loaded, and overwriting a loaded library in place
  # crashes it.
  defp copy(source, target) do
    if File.read!(source) == (File.exists?(target) && File.read!(target)) do
      :noop
    else
      File.mkdir_p!(Path.dirname(target))
      temporary = target <> ".tmp"
      File.cp!(source, temporary)
      File.rename!(temporary, target)
      :ok
    end
  end

  # Rebuilds an archive when its static library or headers are newer.
  defp archive(staticlib, headers, target, opts \\ []) do
    inputs = [staticlib | headers]

    if Mix.Utils.stale?(inputs, [target]) do
      Archive.build!(staticlib, headers, target, opts)
      :ok
    else
      :noop
    end
  end
end
