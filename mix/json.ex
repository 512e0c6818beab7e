defmodule Shmex.Mix.JSON do
  @moduledoc false
  # A JSON decoder for cargo's machine-readable messages: Elixir 1.14 has no
  # JSON module, and this project builds without hex packages.

  @doc "Decodes one JSON document; raises ArgumentError if it is not one."
  @spec decode!(binary()) :: term()
  def decode!(text) do
    case value(skip(text)) do
      {value, rest} ->
        if skip(rest) == "", do: value, else: invalid(rest)
    end
  end

  defp value("{" <> rest), do: object(skip(rest), %{})
  defp value("[" <> rest), do: array(skip(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = text) when c in ~c"-0123456789", do: number(text)
  defp value(text), do: invalid(text)

  defp object("}" <> rest, acc), do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])
    {value, rest} = rest |> skip() |> expect(":") |> skip() |> value()
    acc = Map.put(acc, key, value)

    case skip(rest) do
      "," <> rest -> object(skip(rest), acc)
      "}" <> rest -> {acc, rest}
      other -> invalid(other)
    end
  end

  defp object(text, _acc), do: invalid(text)

  defp array("]" <> rest, acc), do: {Enum.reverse(acc), rest}

  defp array(text, acc) do
    {value, rest} = value(text)

    case skip(rest) do
      "," <> rest -> array(skip(rest), [value | acc])
      "]" <> rest -> {Enum.reverse([value | acc]), rest}
      other -> invalid(other)
    end
  end

  @escapes %{
    ?" => ?",
    ?\\ => ?\\,
    ?/ => ?/,
    ?b => ?\b,
    ?f => ?\f,
    ?n => ?\n,
    ?r => ?\r,
    ?t => ?\t
  }

  defp string("\"" <> rest, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string("\\u" <> <<hex::binary-size(4), rest::binary>>, acc) do
    case {String.to_integer(hex, 16), rest} do
      {high, "\\u" <> <<low::binary-size(4), rest::binary>>} when high in 0xD800..0xDBFF ->
        low = String.to_integer(low, 16)
        string(rest, [<<0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00)::utf8>> | acc])

      {code, rest} ->
        string(rest, [<<code::utf8>> | acc])
    end
  end

  defp string("\\" <> <<c, rest::binary>>, acc) when is_map_key(@escapes, c),
    do: string(rest, [Map.fetch!(@escapes, c) | acc])

  defp string(<<c, rest::binary>>, acc) when c >= 0x20 and c != ?\\, do: string(rest, [c | acc])
  defp string(text, _acc), do: invalid(text)

  defp number(text) do
    [literal] = Regex.run(~r/^-?\d+(\.\d+)?([eE][-+]?\d+)?/, text, capture: :first)
    rest = binary_part(text, byte_size(literal), byte_size(text) - byte_size(literal))

    case Integer.parse(literal) do
      {integer, ""} -> {integer, rest}
      _ -> {literal |> Float.parse() |> elem(0), rest}
    end
  end

  defp expect(text, token) do
    if String.starts_with?(text, token),
      do: binary_part(text, byte_size(token), byte_size(text) - byte_size(token)),
      else: invalid(text)
  end

  defp skip(<<c, rest::binary>>) when c in ~c" \t\r\n", do: skip(rest)
  defp skip(text), do: text

  defp invalid(text) do
    raise ArgumentError, "invalid JSON at: #{inspect(String.slice(text, 0, 40))}"
  end
end
