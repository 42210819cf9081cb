package wechat

// ScanErrcode finds the top-level "errcode" member of a JSON object and
// returns its value. It accepts a number or a string holding one (older
// answers quoted it) and ignores members of nested objects and text inside
// strings, so a business payload that embeds "errcode" deeper is not mistaken
// for the answer's own. ok is false when body is not a JSON object or has no
// top-level errcode. ScanErrcode does not allocate and reads body only once.
func ScanErrcode(body []byte) (code int, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return 0, false
	}
	depth := 0
	expectKey := false
	for ; i < len(body); i++ {
		switch c := body[i]; c {
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
		case '}', ']':
			depth--
			if depth == 0 {
				return 0, false
			}
		case ',':
			expectKey = depth == 1
		case '"':
			end := skipString(body, i)
			if end < 0 {
				return 0, false
			}
			if expectKey && string(body[i+1:end]) == "errcode" {
				return parseValue(body, end+1)
			}
			expectKey = false
			i = end
		}
	}
	return 0, false
}

// skipString returns the index of the closing quote of the string opening at
// body[i], or -1 if it is not closed.
func skipString(body []byte, i int) int {
	for j := i + 1; j < len(body); j++ {
		switch body[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

func skipSpace(body []byte, i int) int {
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	return i
}

// parseValue parses `: <int>` or `: "<int>"` starting at body[i].
func parseValue(body []byte, i int) (int, bool) {
	i = skipSpace(body, i)
	if i >= len(body) || body[i] != ':' {
		return 0, false
	}
	i = skipSpace(body, i+1)
	quoted := i < len(body) && body[i] == '"'
	if quoted {
		i = skipSpace(body, i+1)
	}
	neg := i < len(body) && body[i] == '-'
	if neg {
		i++
	}
	start, n := i, 0
	for ; i < len(body) && body[i] >= '0' && body[i] <= '9'; i++ {
		if n > 1<<40 {
			return 0, false
		}
		n = n*10 + int(body[i]-'0')
	}
	if i == start {
		return 0, false
	}
	if quoted {
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != '"' {
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}
