defmodule Shmex.BuildTest do
  use ExUnit.Case, async: true
  doctest Shmex.Build

  test "the flags name the installed headers and archives, which exist" do
    [ours | _] = Shmex.Build.include_dirs(:nif)
    assert File.exists?(Path.join(ours, "shmex/shmex.h"))
    assert Shmex.Build.cflags(:nif) =~ "-I#{ours}"
    assert File.exists?(Path.join(Shmex.Build.lib_dir(), "libshmex.a"))
    assert Shmex.Build.ldflags(:cnode) =~ "-lshmex_cnode"
  end
end
