defmodule Shmex.Mix.PrecompiledTest do
  # Choosing and installing precompiled artifacts (mix/precompiled.ex),
  # with artifacts made here and served from file:// URLs. The whole path,
  # over HTTP and without Rust, is .ci/precompiled-check.
  use ExUnit.Case, async: false

  alias Shmex.Mix.Precompiled

  @version "9.9.9"

  setup do
    dir = Path.join(System.tmp_dir!(), "shmex-precompiled-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    build = System.get_env("SHMEX_BUILD")
    System.delete_env("SHMEX_BUILD")
    shell = Mix.shell()
    Mix.shell(Mix.Shell.Process)

    on_exit(fn ->
      Mix.shell(shell)
      File.rm_rf!(dir)
      if build, do: System.put_env("SHMEX_BUILD", build), else: System.delete_env("SHMEX_BUILD")
    end)

    %{dir: dir}
  end

  defp vm_nif, do: to_string(:erlang.system_info(:nif_version))

  defp artifact(dir, name, files \\ Precompiled.files()) do
    entries = for file <- files, do: {String.to_charlist(file), "contents of #{file}"}
    path = Path.join(dir, name)
    :ok = :erl_tar.create(String.to_charlist(path), entries, [:compressed])
    Precompiled.checksum(File.read!(path))
  end

  test "Rust targets from the VM's system architecture" do
    assert Precompiled.from_architecture("x86_64-pc-linux-gnu") == "x86_64-unknown-linux-gnu"

    assert Precompiled.from_architecture("aarch64-unknown-linux-gnu") ==
             "aarch64-unknown-linux-gnu"

    assert Precompiled.from_architecture("x86_64-alpine-linux-musl") ==
             "x86_64-unknown-linux-musl"

    assert Precompiled.from_architecture("aarch64-apple-darwin23.4.0") == "aarch64-apple-darwin"
    assert Precompiled.from_architecture("arm64-apple-darwin20") == "aarch64-apple-darwin"
    assert Precompiled.from_architecture("win32") == nil
  end

  test "without a checksum file (a source checkout) it builds from source, silently", %{dir: dir} do
    assert Precompiled.choose(dir, @version) == {:source, nil}
  end

  test "picks the newest listed NIF version the VM loads, for its target and version",
       %{dir: dir} do
    target = Precompiled.target()
    [major, minor] = String.split(vm_nif(), ".")
    newer = "#{major}.#{String.to_integer(minor) + 1}"

    Precompiled.write_checksums!(dir, %{
      Precompiled.artifact_name(@version, "#{major}.0", target) => "sha256:old",
      Precompiled.artifact_name(@version, vm_nif(), target) => "sha256:this",
      Precompiled.artifact_name(@version, newer, target) => "sha256:too-new",
      Precompiled.artifact_name("0.0.1", vm_nif(), target) => "sha256:other-version",
      Precompiled.artifact_name(@version, vm_nif(), "sparc-unknown-none") => "sha256:other-target"
    })

    assert Precompiled.choose(dir, @version) ==
             {:download, Precompiled.artifact_name(@version, vm_nif(), target), "sha256:this"}

    System.put_env("SHMEX_BUILD", "1")
    assert Precompiled.choose(dir, @version) == {:source, "SHMEX_BUILD=1"}
  end

  test "a target with no artifact builds from source, saying why", %{dir: dir} do
    Precompiled.write_checksums!(dir, %{
      Precompiled.artifact_name(@version, vm_nif(), "sparc-unknown-none") => "sha256:x"
    })

    assert {:source, why} = Precompiled.choose(dir, @version)
    assert why =~ "no precompiled artifact for #{Precompiled.target()}"
  end

  test "the checksum file is read, never evaluated", %{dir: dir} do
    File.write!(Precompiled.checksum_path(dir), ~s|%{"a" => System.halt(3)}|)
    assert_raise Mix.Error, ~r/map of strings/, fn -> Precompiled.choose(dir, @version) end
  end

  test "installs a checked artifact once, then does nothing", %{dir: dir} do
    name = "good.tar.gz"
    sum = artifact(dir, name)

    paths = [
      so: Path.join(dir, "project/priv/native/shmex_nif.so"),
      native: Path.join(dir, "native")
    ]

    assert Precompiled.install!(name, sum, "file://#{dir}", paths) == :ok
    assert File.read!(paths[:so]) == "contents of priv/native/shmex_nif.so"

    assert File.read!(Path.join(dir, "native/lib/libshmex.a")) ==
             "contents of native/lib/libshmex.a"

    assert File.read!(Path.join(dir, "native/precompiled")) == "#{name} #{sum}\n"
    assert Precompiled.install!(name, sum, "file://#{dir}", paths) == :noop
  end

  test "a mismatching, missing or incomplete artifact installs nothing", %{dir: dir} do
    paths = [
      so: Path.join(dir, "project/priv/native/shmex_nif.so"),
      native: Path.join(dir, "native")
    ]

    sum = artifact(dir, "good.tar.gz")

    assert_raise Mix.Error,
                 ~r/good.tar.gz .* does not match its checksum.*says: sha256:0000/s,
                 fn ->
                   Precompiled.install!("good.tar.gz", "sha256:0000", "file://#{dir}", paths)
                 end

    assert_raise Mix.Error, ~r/could not download the precompiled Shmex gone.tar.gz/, fn ->
      Precompiled.install!("gone.tar.gz", sum, "file://#{dir}", paths)
    end

    partial = artifact(dir, "partial.tar.gz", ["priv/native/shmex_nif.so"])

    assert_raise Mix.Error, ~r/nothing was installed/, fn ->
      Precompiled.install!("partial.tar.gz", partial, "file://#{dir}", paths)
    end

    refute File.exists?(paths[:so])
    refute File.exists?(Path.join(dir, "native"))
  end
end
