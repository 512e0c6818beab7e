defmodule Shmex.Mix.Precompiled do
  @moduledoc false
  # Precompiled artifacts: one archive per Rust target and NIF version,
  # holding every file `mix compile` installs (the NIF library and the C
  # archives and headers bundlex links into unifex natives), listed with its
  # sha256 in the checksum file at the project's root, which ships in the
  # Hex package. The compiler installs an artifact when the checksum file
  # lists one for the VM's target and NIF version, and builds from source
  # otherwise; `mix shmex.precompiled` makes them.

  @checksum_file "checksum-shmex.exs"

  @how_else """
  Set SHMEX_PRECOMPILED_URL to where the artifact can be downloaded,
  or build from source with SHMEX_BUILD=1 (needs Rust 1.91 or later:
  README.md, "Building from source").\
  """

  # The NIF version the library is built for (rustler's `nif_version_2_16`
  # in Cargo.toml): it loads on that version and every later 2.x.
  @nif_version "2.16"

  # Every file of an artifact: where it goes, relative to the project root
  # (`priv/`, which releases carry) or to the application's build directory
  # (`native/`, beside `ebin/`, build inputs only). See Shmex.Build.
  @files ~w(
    priv/native/shmex_nif.so
    native/include/shmex/lib.h
    native/include/shmex/shmex.h
    native/include/shmex/lib_nif.h
    native/include_cnode/shmex/shmex.h
    native/lib/libshmex.a
    native/lib/libshmex_cnode.a
    native/lib/libshmex_lib.a
  )

  @doc "The files of an artifact, as paths inside it."
  @spec files() :: [String.t()]
  def files, do: @files

  @doc "The NIF version artifacts are built for."
  @spec nif_version() :: String.t()
  def nif_version, do: @nif_version

  @doc "The checksum file of the project at `root`."
  @spec checksum_path(Path.t()) :: Path.t()
  def checksum_path(root), do: Path.join(root, @checksum_file)

  @doc "The file name of the artifact for `version`, NIF version and Rust target."
  @spec artifact_name(String.t(), String.t(), String.t()) :: String.t()
  def artifact_name(version, nif_version, target),
    do: "shmex-v#{version}-nif-#{nif_version}-#{target}.tar.gz"

  @doc """
  The Rust target triple of this VM: `SHMEX_TARGET` if set, else derived
  from the system architecture the VM was built for; nil when unknown.
  """
  @spec target() :: String.t() | nil
  def target do
    System.get_env("SHMEX_TARGET") ||
      from_architecture(to_string(:erlang.system_info(:system_architecture)))
  end

  @doc false
  @spec from_architecture(String.t()) :: String.t() | nil
  def from_architecture(architecture) do
    case String.split(architecture, "-") do
      [cpu, _vendor, "linux", abi | _] -> linux(cpu, abi)
      [cpu, "linux", abi | _] -> linux(cpu, abi)
      [cpu, "apple", "darwin" <> _ | _] -> "#{cpu(cpu)}-apple-darwin"
      _other -> nil
    end
  end

  defp linux(cpu, abi) do
    abi = if String.starts_with?(abi, "musl"), do: "musl", else: abi
    "#{cpu(cpu)}-unknown-linux-#{abi}"
  end

  defp cpu("arm64"), do: "aarch64"
  defp cpu("amd64"), do: "x86_64"
  defp cpu(cpu), do: cpu

  @doc """
  What the compiler should do for the project at `root`:
  `{:download, name, "sha256:…"}`, or `{:source, why}` where `why` says why
  (nil for a source checkout, which has no checksum file).
  """
  @spec choose(Path.t(), String.t()) :: {:download, String.t(), String.t()} | {:source, term()}
  def choose(root, version) do
    build = System.get_env("SHMEX_BUILD")

    cond do
      build in ~w(1 true) -> {:source, "SHMEX_BUILD=#{build}"}
      not File.exists?(checksum_path(root)) -> {:source, nil}
      true -> choose_artifact(read_checksums!(checksum_path(root)), version, target())
    end
  end

  defp choose_artifact(_checksums, _version, nil) do
    {:source,
     "no precompiled artifact for this system architecture, " <>
       "#{:erlang.system_info(:system_architecture)} (SHMEX_TARGET can name a Rust target)"}
  end

  defp choose_artifact(checksums, version, target) do
    vm_nif = to_string(:erlang.system_info(:nif_version))

    candidates =
      for {name, sum} <- checksums,
          {:ok, nif} <- [parse(name, version, target)],
          compatible?(nif, vm_nif),
          do: {nif, name, sum}

    case Enum.max_by(candidates, fn {nif, _, _} -> nif end, fn -> nil end) do
      {_nif, name, sum} ->
        {:download, name, sum}

      nil ->
        {:source, "no precompiled artifact for #{target} and NIF #{vm_nif} in #{@checksum_file}"}
    end
  end

  defp parse(name, version, target) do
    prefix = "shmex-v#{version}-nif-"
    suffix = "-#{target}.tar.gz"

    with true <- String.starts_with?(name, prefix) and String.ends_with?(name, suffix),
         nif = name |> String.replace_prefix(prefix, "") |> String.replace_suffix(suffix, ""),
         [major, minor] <- String.split(nif, "."),
         {major, ""} <- Integer.parse(major),
         {minor, ""} <- Integer.parse(minor) do
      {:ok, {major, minor}}
    else
      _ -> :error
    end
  end

  defp compatible?({major, minor}, vm_nif) do
    [vm_major, vm_minor] = vm_nif |> String.split(".") |> Enum.map(&String.to_integer/1)
    major == vm_major and minor <= vm_minor
  end

  @doc "The checksum file's map of artifact names to `\"sha256:…\"`."
  @spec read_checksums!(Path.t()) :: %{String.t() => String.t()}
  def read_checksums!(path) do
    # A literal map of strings: read, never evaluated.
    case Code.string_to_quoted(File.read!(path)) do
      {:ok, {:%{}, _, pairs}} ->
        if Enum.all?(pairs, fn {k, v} -> is_binary(k) and is_binary(v) end),
          do: Map.new(pairs),
          else: Mix.raise("#{path} must be a map of strings to strings")

      _other ->
        Mix.raise("#{path} must be a map of artifact names to \"sha256:...\" checksums")
    end
  end

  @doc "Writes the checksum file of `root` listing `checksums`."
  @spec write_checksums!(Path.t(), %{String.t() => String.t()}) :: :ok
  def write_checksums!(root, checksums) do
    lines =
      Enum.map_join(Enum.sort(checksums), "", fn {k, v} ->
        "  #{inspect(k)} => #{inspect(v)},\n"
      end)

    path = checksum_path(root)
    File.write!(path <> ".tmp", "%{\n" <> lines <> "}\n")
    File.rename!(path <> ".tmp", path)
  end

  @doc "`\"sha256:…\"` of `data`."
  @spec checksum(binary()) :: String.t()
  def checksum(data), do: "sha256:" <> Base.encode16(:crypto.hash(:sha256, data), case: :lower)

  @doc """
  Installs artifact `name` (checked against `sum`) from `base_url`: the NIF
  at `so_path`, the rest under `native_dir`. Downloads and checks the whole
  artifact before writing any file, and records what it installed in
  `marker` last, so a failure leaves nothing that counts as installed.
  Returns :noop when `marker` already names this artifact.
  """
  @spec install!(String.t(), String.t(), String.t(), keyword()) :: :ok | :noop
  def install!(name, sum, base_url, paths) do
    so_path = Keyword.fetch!(paths, :so)
    native_dir = Keyword.fetch!(paths, :native)
    marker = Path.join(native_dir, "precompiled")
    installed = "#{name} #{sum}\n"

    if File.read(marker) == {:ok, installed} and File.exists?(so_path) do
      :noop
    else
      url = String.trim_trailing(base_url, "/") <> "/" <> name
      Mix.shell().info("Downloading the precompiled Shmex #{name} from #{url}")
      data = fetch!(url, name)
      found = checksum(data)

      unless found == sum do
        Mix.raise("""
        the precompiled Shmex #{name} from #{url} does not match its checksum.
          #{@checksum_file} says: #{sum}
          the download is:     #{found}
        Nothing was installed. #{@how_else}
        """)
      end

      entries = unpack!(data, name)
      File.rm(marker)

      # Build inputs first, the NIF library last: each through a rename, as
      # a VM may have the old library loaded.
      {[so], rest} =
        Enum.split_with(entries, fn {file, _} -> file == "priv/native/shmex_nif.so" end)

      for {file, content} <- rest ++ [so] do
        target =
          case file do
            "priv/" <> _ -> so_path
            "native/" <> relative -> Path.join(native_dir, relative)
          end

        File.mkdir_p!(Path.dirname(target))
        File.write!(target <> ".tmp", content)
        File.rename!(target <> ".tmp", target)
      end

      File.write!(marker, installed)
      :ok
    end
  end

  defp unpack!(data, name) do
    case :erl_tar.extract({:binary, data}, [:compressed, :memory]) do
      {:ok, entries} ->
        entries = Map.new(entries, fn {file, content} -> {to_string(file), content} end)

        if Enum.sort(Map.keys(entries)) == Enum.sort(@files) do
          Enum.to_list(entries)
        else
          Mix.raise(
            "the precompiled Shmex #{name} holds #{inspect(Map.keys(entries))}, " <>
              "not the files #{inspect(@files)}; nothing was installed"
          )
        end

      {:error, reason} ->
        Mix.raise("the precompiled Shmex #{name} is not a .tar.gz: #{inspect(reason)}")
    end
  end

  defp fetch!(url, name) do
    result =
      case URI.parse(url) do
        %URI{scheme: "file", path: path} -> File.read(path)
        %URI{scheme: scheme} when scheme in ["http", "https"] -> http_get(url)
        _other -> {:error, "not an http, https or file URL"}
      end

    case result do
      {:ok, data} ->
        data

      {:error, reason} ->
        Mix.raise("""
        could not download the precompiled Shmex #{name} from #{url}:
          #{format_reason(reason)}
        Nothing was installed. #{@how_else}
        """)
    end
  end

  defp format_reason(reason) when is_binary(reason), do: reason

  defp format_reason({:failed_connect, [{:to_address, {host, port}} | rest]}) do
    why = for {_, _, why} <- rest, do: inspect(why)
    "cannot connect to #{host}:#{port} (#{Enum.join(why, ", ")})"
  end

  defp format_reason(:enoent), do: "no such file"
  defp format_reason(reason), do: inspect(reason)

  defp http_get(url) do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)
    options = [timeout: 120_000, connect_timeout: 15_000, autoredirect: true]

    options =
      if String.starts_with?(url, "https:") do
        ssl = [
          verify: :verify_peer,
          cacerts: :public_key.cacerts_get(),
          depth: 4,
          customize_hostname_check: [
            match_fun: :public_key.pkix_verify_hostname_match_fun(:https)
          ]
        ]

        [{:ssl, ssl} | options]
      else
        options
      end

    case :httpc.request(:get, {to_charlist(url), []}, options, body_format: :binary) do
      {:ok, {{_, 200, _}, _headers, body}} -> {:ok, body}
      {:ok, {{_, status, reason}, _headers, _body}} -> {:error, "HTTP #{status} #{reason}"}
      {:error, reason} -> {:error, reason}
    end
  end
end
