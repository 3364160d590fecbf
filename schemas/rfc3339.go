package schemas

import "math"

// parseRFC3339 parses YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM) into unix
// nanoseconds without allocating. T and Z may be lower case (RFC 3339 §5.6);
// fraction digits past the ninth are truncated; second 60 (leap second) is
// refused, as Go's time.Parse does.
func parseRFC3339(b []byte) (int64, string) {
	if len(b) < len("2006-01-02T15:04:05Z") || len(b) > MaxStringBytes {
		return 0, reasonBadTime
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return 0, reasonBadTime
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour > 23 || minute > 59 || sec > 59 {
		return 0, reasonBadTime
	}
	i := 19
	var frac int64
	if b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if i-start < 9 {
				frac = frac*10 + int64(b[i]-'0')
			}
			i++
		}
		n := i - start
		if n == 0 {
			return 0, reasonBadTime
		}
		for ; n < 9; n++ {
			frac *= 10
		}
	}
	if i >= len(b) {
		return 0, reasonBadTime
	}
	var offset int64
	switch b[i] {
	case 'Z', 'z':
		i++
	case '+', '-':
		if len(b)-i != 6 || b[i+3] != ':' {
			return 0, reasonBadTime
		}
		oh, ok1 := digits(b[i+1 : i+3])
		om, ok2 := digits(b[i+4 : i+6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return 0, reasonBadTime
		}
		offset = int64(oh*3600 + om*60)
		if b[i] == '-' {
			offset = -offset
		}
		i += 6
	default:
		return 0, reasonBadTime
	}
	if i != len(b) {
		return 0, reasonBadTime
	}
	secs := daysFromCivil(int64(year), int64(month), int64(day))*86400 +
		int64(hour*3600+minute*60+sec) - offset
	const maxSecs, maxFrac = math.MaxInt64 / 1_000_000_000, math.MaxInt64 % 1_000_000_000
	switch {
	case secs < 0 || secs == 0 && frac == 0:
		return 0, reasonBeforeEpoch
	case secs > maxSecs || secs == maxSecs && frac > maxFrac:
		return 0, reasonTimeRange
	}
	return secs*1_000_000_000 + frac, ""
}

// digits parses a run of ASCII decimal digits.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12 // March = 0
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
