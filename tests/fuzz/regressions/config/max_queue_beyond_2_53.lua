return {
	limits = { max_queue = math.maxinteger // 2 },
}
